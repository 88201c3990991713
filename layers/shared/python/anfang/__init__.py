"""anfang: the data integration layer of a community smart-security program.

The package is both the shared Lambda layer (``layers/shared/python``) and the library the edge agent
imports. ``anfang.contracts`` holds the wire contracts and imports nothing from AWS.
"""

__version__ = "0.1.0"

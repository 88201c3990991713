"""anfang-edge: the edge agent that runs on site gateways (spool, signed uploads, device sources).

It depends on ``anfang.contracts`` only: no boto3, no OpenCV.
"""

__version__ = "0.1.0"

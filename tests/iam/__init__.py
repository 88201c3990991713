"""IAM coverage: which AWS calls each function of template.yaml makes in the tests, and whether its role allows them.

moto does not enforce IAM, so without this nothing checks that a function's policy in the template allows the
calls its code makes, or only those. ``recorder`` records the calls while the functional and local-stack
tests run; ``policy`` reads the roles out of the transformed template and evaluates each call against them;
``tests/contract/test_iam_coverage.py`` runs last and fails on any call the role does not allow.
"""

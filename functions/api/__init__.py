"""Lambda function code (see functions/README.md); a package only so that mypy tells the handlers apart."""

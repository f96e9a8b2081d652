"""Adapters: the ports (``lambdas.ports``) implemented on AWS services. Each takes an
injected boto3 client and translates ``botocore`` errors into typed errors; nothing
else in ``lambdas`` imports boto3."""

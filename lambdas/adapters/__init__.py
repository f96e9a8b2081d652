"""Adapters: the ports (``lambdas.ports``) implemented on AWS services. Each takes an
injected boto3 client and translates ``botocore`` errors into typed errors; besides
them only the composition roots (``lambdas.api.deps``, ``lambdas.handlers``) touch boto3,
and only to build clients."""

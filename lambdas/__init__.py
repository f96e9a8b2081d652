"""The control plane on AWS Lambda: ``handlers`` (one composition root per function) and
``api`` (the FastAPI app) call ``usecases``, which work on ``domain`` values through
``ports``; ``adapters`` implement the ports over boto3. ``resources`` is the one list of
tables, queues, functions and environment names (the CDK stack reads it too) and
``settings`` parses the environment once.

It imports ``seg_contract`` and never ``onprem_gateway`` (``tests/unit/test_layering.py``).
"""

"""The CDK app that deploys the control plane (``python -m cdk.app``).

One construct per capability (storage, queues, functions, policy signing keys, readers,
HTTP API, WebSocket API, schedule, auth, monitoring), all built from
``lambdas.resources`` so there is no second list of tables, queues or functions. May
import aws_cdk, constructs, cdk_nag, jsii and ``lambdas.resources``; nothing here is
imported by the Lambda code.
"""

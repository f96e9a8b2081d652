"""Use cases of the control plane: one verb per module, each taking its ports
(``lambdas.ports``) as arguments and returning values or raising typed errors
(``lambdas.domain.errors``). May import ``lambdas.domain``, ``lambdas.ports`` and
``seg_contract``; never boto3, FastAPI or an adapter."""

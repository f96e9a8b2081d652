"""The control plane's pure domain: compliance evaluation, the access decision for an
email device, policy-version rules, MDM event and queue message models. Values in,
values out, the clock a parameter. May import only ``seg_contract``, pydantic and the
standard library (never boto3, an adapter or a use case)."""

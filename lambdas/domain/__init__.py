"""The control plane's pure domain: compliance evaluation, the access decision for an
email device, policy-version rules, MDM event and queue message models, the values the
ports and adapters carry (the email-device view and access history, stored credentials,
node reports, audit records, notice settings and markers), the one page-cursor codec and
the one error module (``errors``). Values in, values out, the clock a parameter. May
import only ``seg_contract``, pydantic and the standard library (never boto3, an adapter,
a port or a use case; ``tests/unit/test_layering.py`` checks it)."""

"""The CDK stack deployed into ministack (a local AWS emulator) and driven end to end."""

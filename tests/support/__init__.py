"""Test helpers shared by several tiers (moto fixtures, event builders)."""

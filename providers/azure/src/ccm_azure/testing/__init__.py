"""Test doubles of Azure for the provider's tests and its conformance driver."""

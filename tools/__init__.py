"""Tessera tools: plain typed functions with pydantic inputs and outputs that echo their parameters."""

"""Admission cost: token counting, context fitting, rate limits and budgets, per request."""

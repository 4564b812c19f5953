"""Handlers of the example research project (digits, torch on CPU); see research/research_plan.yaml."""

"""Agents: who answers (registry), what they are told (prompts), and the run itself (runner)."""

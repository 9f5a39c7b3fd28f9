"""Server-side tools: what an agent can do besides talk (files, commands, web pages, memory,
other sessions), the policy that picks them, and the guards around them."""

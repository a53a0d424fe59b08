"""REST blueprints, one per resource; each route parses, calls one service, and shapes the reply."""

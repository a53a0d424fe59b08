"""People around the loop: users and roles, who is calling, review, agreement, per-annotator progress."""

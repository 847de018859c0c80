"""Process sandboxes: a zygote forks one isolated child per sandbox, which runs Python actions."""

pytest_plugins = ["tests._postgres"]

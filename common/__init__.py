"""What every layer shares and nothing else: the user-error class, the command-line wrapper that
prints it as one line, and the config loader. The lowest layer: it imports none of our packages."""

"""The application: its config file, the built-in actor kinds, building and running the tree,
the `daz-actors` command line, and the demo.
"""

"""splitter: run a trained Keras model split layer by layer across several machines.

Everything the CLI does is available as a library call; heavy imports (TensorFlow) happen
only inside the functions that need them, so planning stays fast to import.
"""

__version__ = "0.1.0"

"""The core: mollifier kernels, noise sampling, aggregation, modes, plans and the compiled engine.

Pure TensorFlow and NumPy: nothing here reads a Keras model. The engine runs any network that
offers the small :class:`tfmollify.core.engine.Network` interface (the adapter's ``ModelView``
does).
"""

"""The Keras adapter: a user's settings and Keras model, seen by the core.

- :mod:`~tfmollify.adapter.spec`: the settings, checked once and frozen;
- :mod:`~tfmollify.adapter.request`: the rules every request obeys on every path;
- :mod:`~tfmollify.adapter.model_view` (with :mod:`~tfmollify.adapter.layers`,
  :mod:`~tfmollify.adapter.weights`, :mod:`~tfmollify.adapter.probes`): the model as the engine
  runs it;
- :mod:`~tfmollify.adapter.keras_compat`: the private Keras API, in one place;
- :mod:`~tfmollify.adapter.runner`: one call, from the arguments to the result, composed of the
  compiled-core cache (:mod:`~tfmollify.adapter.cores`), the block loop
  (:mod:`~tfmollify.adapter.blocks`) and the tolerance rounds (:mod:`~tfmollify.adapter.rounds`);
  :mod:`~tfmollify.adapter.calls` holds a call's request and result.
"""

"""Integrations: tfmollify inside other systems, through the explainer's public seam.

Datasets (:mod:`~tfmollify.integrations.dataset`), Ray (:mod:`~tfmollify.integrations.parallel`),
the Keras training callback (:mod:`~tfmollify.integrations.callbacks`), loaded exports
(:mod:`~tfmollify.integrations.loader`) and the HTTP server (:mod:`~tfmollify.integrations.serve`).
"""

"""scalinglab.models: the transformer, its presets, sharding rules and exact parameter/FLOP accounting.

Modules (import them directly; this package imports nothing heavy on its own):

* ``config``      — ``ModelConfig``, ``PRESETS``, ``get_config``, ``validate``
* ``transformer`` — ``Transformer`` (Flax NNX), ``tokens_BT -> logits_BTV``
* ``sharding``    — mesh, ``LOGICAL_RULES``, ``state_shardings``, ``batch_spec``
* ``accounting``  — parameter counts and FLOPs per token (integers)
* ``jaxpr_flops`` — FLOPs of any function from its jaxpr (2·M·N·K per dot_general)
* ``ladder``      — configs for a target non-embedding size / depth and aspect ratio
* ``cli``         — ``scalinglab params`` and ``scalinglab flops``
"""

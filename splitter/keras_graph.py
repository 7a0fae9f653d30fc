"""Every use of Keras internals lives here, so a Keras upgrade touches one module.

Slicing works on the *nodes* of a functional graph (one per layer call and per `keras.ops`
operation), not on ``model.layers``: that list misses ops and counts a shared layer once.
The private API used is ``Functional._nodes_by_depth``, ``Node.arguments.fill_in``,
``Node.outputs`` and ``KerasTensor._keras_history``; it was verified on the pinned Keras
version below (see ``tests/test_keras_graph.py``), which is why the pin is exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import tree

from splitter.errors import SplitterError

TESTED_KERAS_VERSIONS = ("3.15.1",)

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass
class GraphNode:
    """One operation call in topological order, with its input and output tensors."""

    position: int
    operation: Any  # keras.Operation
    node: Any  # keras.src.ops.node.Node
    inputs: list[Any]  # KerasTensors read (deduplicated, in argument order)
    outputs: list[Any]  # KerasTensors produced

    @property
    def name(self) -> str:
        return self.operation.name


@dataclass
class FlatGraph:
    """A model flattened to one level of nodes, with stable names for every tensor."""

    model: Any  # keras.Model whose graph has no nested models
    nodes: list[GraphNode]
    inputs: list[Any]  # model input KerasTensors, in the model's order
    outputs: list[Any]  # model output KerasTensors, in the model's order
    names: dict[int, str] = field(default_factory=dict)  # id(KerasTensor) -> stable name

    def name_of(self, tensor: Any) -> str:
        return self.names[id(tensor)]


def check_keras_version() -> None:
    """Refuse to slice on a Keras whose private graph API we have not verified."""
    if keras.__version__ not in TESTED_KERAS_VERSIONS:
        raise SplitterError(
            f"Keras {keras.__version__} is installed but splitter's graph code was verified on "
            f"Keras {', '.join(TESTED_KERAS_VERSIONS)}",
            f"install the tested version: pip install keras=={TESTED_KERAS_VERSIONS[-1]}",
        )


def _graph_of(model: Any) -> Any:
    """The Functional graph behind a model: itself, or a Sequential's internal functional."""
    if isinstance(model, keras.Sequential):
        if not model.built:
            model.build()
        return getattr(model, "_functional", None)
    if hasattr(model, "_nodes_by_depth") and getattr(model, "_inputs", None) is not None:
        return model
    return None


def _is_nested_model(operation: Any) -> bool:
    return isinstance(operation, keras.Model) and _graph_of(operation) is not None


def _nodes_in_order(graph: Any) -> list[Any]:
    """Non-input nodes of a functional graph in topological order (deepest first)."""
    ordered = []
    for depth in sorted(graph._nodes_by_depth.keys(), reverse=True):
        ordered.extend(node for node in graph._nodes_by_depth[depth] if not node.is_input)
    return ordered


def _node_of(tensor: Any) -> Any:
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def flatten(model: Any) -> FlatGraph:
    """Re-call every operation of ``model`` on fresh inputs, inlining nested models.

    The result shares the original layer objects (and so their weights) but has one flat
    level of nodes, so a cut can fall inside what was a nested Sequential or Functional.
    """
    graph = _graph_of(model)
    if graph is None:
        raise SplitterError(
            f"model '{model.name}' is a subclassed Keras model, which has no layer graph to cut",
            "rebuild it with the functional API (keras.Input + layer calls) or as Sequential",
        )
    fresh_inputs = [
        keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_input_name(t, i))
        for i, t in enumerate(graph.inputs)
    ]
    created: list[Any] = []
    outputs = _inline(graph, fresh_inputs, created)
    try:
        flat_model = keras.Model(fresh_inputs, outputs, name=f"{model.name}_flat")
    except ValueError as error:
        raise SplitterError(
            f"model '{model.name}' cannot be flattened: {str(error).splitlines()[0]}",
            "give every layer a unique name (nested models may reuse their outer names)",
        ) from error
    nodes = []
    seen: set[int] = set()
    for node in created:
        if id(node) in seen:
            continue
        seen.add(id(node))
        reads = _unique(node.arguments.keras_tensors)
        nodes.append(GraphNode(len(nodes), node.operation, node, reads, list(node.outputs)))
    flat = FlatGraph(flat_model, nodes, list(fresh_inputs), list(outputs))
    flat.names = _stable_names(flat)
    return flat


def _input_name(tensor: Any, index: int) -> str:
    operation = tensor._keras_history[0]
    return _sanitize(getattr(operation, "name", None) or f"input_{index}")


def _inline(
    graph: Any, inputs: list[Any], created: list[Any], shared: dict[str, Any] | None = None
) -> list[Any]:
    """Run ``graph``'s nodes on ``inputs`` symbolically; record every node created.

    ``shared`` maps operation names to the object to call: slices loaded from separate
    files hold separate copies of a shared layer, and a stage must hold it once.
    """
    tensor_map: dict[int, Any] = {id(t): x for t, x in zip(graph.inputs, inputs, strict=True)}
    for node in _nodes_in_order(graph):
        args, kwargs = node.arguments.fill_in(tensor_map)
        operation = node.operation
        if shared is not None:
            operation = shared.setdefault(operation.name, operation)
        if _is_nested_model(operation):
            inner = _graph_of(operation)
            results = _inline(inner, tree.flatten(args[0] if args else kwargs), created, shared)
        else:
            produced = operation(*args, **kwargs)
            results = tree.flatten(produced)
            for tensor in results:
                created.append(_node_of(tensor))
        for old, new in zip(node.outputs, results, strict=True):
            tensor_map[id(old)] = new
    return [tensor_map[id(t)] for t in graph.outputs]


def _unique(tensors: list[Any]) -> list[Any]:
    seen: set[int] = set()
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _sanitize(name: str) -> str:
    return _UNSAFE_NAME.sub("_", name)


def _stable_names(flat: FlatGraph) -> dict[int, str]:
    """Name tensors ``<operation>__<call>__<output>``: stable across runs, unique, safe."""
    names: dict[int, str] = {}
    used: set[str] = set()

    def claim(tensor: Any, base: str) -> None:
        name, suffix = base, 1
        while name in used:
            suffix += 1
            name = f"{base}_{suffix}"
        used.add(name)
        names[id(tensor)] = name

    for tensor in flat.inputs:
        claim(tensor, f"{_sanitize(tensor._keras_history[0].name)}__0__0")
    calls: dict[str, int] = {}
    for node in flat.nodes:
        op_name = _sanitize(node.name)
        call = calls.get(op_name, 0)
        calls[op_name] = call + 1
        for index, tensor in enumerate(node.outputs):
            if id(tensor) not in names:
                claim(tensor, f"{op_name}__{call}__{index}")
    return names


def cut_sets(flat: FlatGraph) -> list[list[Any]]:
    """``cuts[k]``: tensors produced before node k and read at or after it (or model outputs).

    ``cuts[0]`` is the model's inputs and ``cuts[-1]`` its outputs, both in model order.
    """
    count = len(flat.nodes)
    produced_at: dict[int, int] = {id(t): -1 for t in flat.inputs}
    last_read: dict[int, int] = {}
    by_id: dict[int, Any] = {id(t): t for t in flat.inputs}
    for node in flat.nodes:
        for tensor in node.inputs:
            last_read[id(tensor)] = node.position
        for tensor in node.outputs:
            produced_at[id(tensor)] = node.position
            by_id[id(tensor)] = tensor
    for tensor in flat.outputs:
        last_read[id(tensor)] = count
    order = sorted(produced_at, key=lambda key: produced_at[key])  # stable: creation order
    cuts = []
    for k in range(count + 1):
        if k == count:
            cuts.append(list(_unique(flat.outputs)))
            continue
        crossing = [
            by_id[key] for key in order if produced_at[key] < k and last_read.get(key, -2) >= k
        ]
        if k == 0:
            crossing = [t for t in flat.inputs if id(t) in {id(c) for c in crossing}]
        cuts.append(crossing)
    return cuts


def build_submodel(flat: FlatGraph, start: int, stop: int, cuts: list[list[Any]]) -> Any:
    """One Keras model for nodes ``[start, stop)``: dict of ``cuts[start]`` in, ``cuts[stop]`` out.

    It re-calls the original operations, so it shares their weights; tensors that only pass
    through the range are returned unchanged.
    """
    tensor_map: dict[int, Any] = {}
    new_inputs: dict[str, Any] = {}
    for tensor in cuts[start]:
        name = flat.name_of(tensor)
        new_inputs[name] = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=name)
        tensor_map[id(tensor)] = new_inputs[name]
    for graph_node in flat.nodes[start:stop]:
        args, kwargs = graph_node.node.arguments.fill_in(tensor_map)
        results = tree.flatten(graph_node.operation(*args, **kwargs))
        for old, new in zip(graph_node.outputs, results, strict=True):
            tensor_map[id(old)] = new
    outputs = {flat.name_of(t): tensor_map[id(t)] for t in cuts[stop]}
    return keras.Model(new_inputs, outputs, name=f"slice_{start}_{stop}")


def call_inlined(
    model: Any, inputs: dict[str, Any], shared: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply a dict-in, dict-out model to symbolic ``inputs`` by re-calling its operations.

    Used to join loaded slices into one stage model: the stage gets the slices' layers
    directly instead of nested models, so it converts and runs like any flat model.
    """
    graph = _graph_of(model)
    in_struct, out_struct = graph._inputs_struct, graph._outputs_struct
    if not (isinstance(in_struct, dict) and isinstance(out_struct, dict)):
        raise SplitterError(
            f"model '{model.name}' is not a splitter slice (its inputs and outputs are not named)",
            "re-run `splitter slice` to regenerate the slice set",
        )
    in_keys, out_keys = sorted(in_struct), sorted(out_struct)  # keras.tree.flatten order
    missing = [key for key in in_keys if key not in inputs]
    if missing:
        raise SplitterError(
            f"slice '{model.name}' needs tensors {missing} that earlier slices do not provide",
            "re-run `splitter slice` to regenerate the slice set",
        )
    results = _inline(graph, [inputs[key] for key in in_keys], [], shared)
    return dict(zip(out_keys, results, strict=True))


def operation_weights_bytes(operations: list[Any]) -> int:
    """Bytes of every weight the operations hold (trainable or not), each layer once."""
    seen: set[int] = set()
    total = 0
    for operation in operations:
        for weight in getattr(operation, "weights", []):
            if id(weight) in seen:
                continue
            seen.add(id(weight))
            total += int(np.prod(weight.shape)) * np.dtype(weight.dtype).itemsize
    return total


def estimate_flops(node: GraphNode) -> int:
    """Rough FLOPs per sample: 2 × kernel size × output positions, else one per output element.

    For Dense and ConvND the kernel covers one output position, so this counts their
    multiply-adds; for element-wise and pooling layers the output size is the right order.
    """
    output_elements = sum(_elements(t) for t in node.outputs)
    kernel = getattr(node.operation, "kernel", None)
    if kernel is None:
        kernel = getattr(node.operation, "depthwise_kernel", None)
    if kernel is None or not node.outputs:
        return output_elements
    kernel_size = int(np.prod(kernel.shape))
    out_shape = node.outputs[0].shape
    positions = int(np.prod([d or 1 for d in out_shape[1:-1]])) if len(out_shape) > 2 else 1
    return 2 * kernel_size * positions


def _elements(tensor: Any) -> int:
    return int(np.prod([d or 1 for d in tensor.shape[1:]]))


def bytes_per_sample(tensor: Any) -> int:
    """Bytes one sample of ``tensor`` takes (unknown dimensions counted as 1)."""
    return _elements(tensor) * np.dtype(tensor.dtype).itemsize


def peak_live_bytes(flat: FlatGraph, start: int, stop: int, cuts: list[list[Any]]) -> int:
    """Peak bytes per sample of tensors alive at once while running nodes ``[start, stop)``."""
    keep = {id(t) for t in cuts[start]} | {id(t) for t in cuts[stop]}
    last_read: dict[int, int] = {}
    for node in flat.nodes[start:stop]:
        for tensor in node.inputs:
            last_read[id(tensor)] = node.position
    live = {id(t): bytes_per_sample(t) for t in cuts[start]}
    current = peak = sum(live.values())
    for node in flat.nodes[start:stop]:
        for tensor in node.outputs:
            live[id(tensor)] = bytes_per_sample(tensor)
            current += live[id(tensor)]
        peak = max(peak, current)
        for tensor in node.inputs:
            key = id(tensor)
            if last_read.get(key) == node.position and key not in keep and key in live:
                current -= live.pop(key)
    return peak

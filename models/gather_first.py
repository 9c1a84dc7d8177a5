#!/usr/bin/env python3
"""Move Gathers in front of the dequantisation of a constant quantised table.

WHY: a quantised model often stores an embedding table as an integer initializer and
dequantises the *whole* table in the graph before gathering the rows it needs:

    q (int8 [V, D]) ──DequantizeLinear / Cast→(Sub)→Mul──► table (f32 [V, D]) ──Gather(ids)──► rows

ONNX Runtime constant-folds the dequantisation once at load time; tract does not, so on every call
it converts all V×D values (11.7 M for MiniLM's 30522×384 word embeddings) to use a handful of
rows. Gathering first gives the same numbers for a fraction of the work:

    q ──Gather(ids)──► q rows (int8) ──same dequantisation, on the rows only──► rows

Dequantisation is elementwise, so it commutes with Gather as long as each constant operand (scale,
zero point) is gathered along with the table when it varies along the gathered axis (per-row
scales), and is used as it is when it does not.

WHAT IS REWRITTEN: every Gather of the main graph whose `data` input is a chain, starting at a
constant integer initializer, of
  * DequantizeLinear(q, scale[, zero_point])  (q: the table; scale/zero point constant;
    per-tensor, or per-axis on any axis; blocked quantisation is skipped), then optionally
  * Cast, and Add/Sub/Mul/Div with one constant operand (scalar or broadcastable),
with at least one Cast or DequantizeLinear in it (otherwise it is not a dequantisation). The
pattern in the MiniLM int8 model (torch.onnx export) is Cast(int8 → f32) → Mul(scale [V, 1]).

Each such Gather is replaced, at its place in the node list, by Gather(q, ids) followed by the
same steps on the gathered rows; the last new node writes the Gather's original output name, so
nothing downstream changes. A constant that varies along the gathered axis is gathered with the
same ids (a new small Gather); one that does not is used unchanged (reshaped into a new
initializer only if its rank needs it). A per-axis DequantizeLinear along the gathered axis cannot
stay a DequantizeLinear (its 1-D scale would have to follow the ids' shape) and is written out as
Cast → Sub(zero point) → Mul(scale), which computes the same thing. The old dequantisation nodes
are removed only if nothing else reads their outputs. Every other node, the opset imports and the
IR version are left alone; the result passes onnx.checker.

Cases that are reported and skipped: a table that is also a graph input (it can be overridden, so
it is not a constant), a constant whose rank exceeds the table's, a constant that varies along
an axis before the gathered one but not along the gathered axis, blocked or output_dtype
DequantizeLinear.

Idempotent: in the output the Gathers read integer initializers directly, so a second run finds
nothing.

Usage: gather_first.py IN.onnx OUT.onnx
Prints one line per rewritten Gather (and per skipped candidate). Exit status: 0 rewritten and
written, 3 nothing to rewrite (OUT is not written), 1 error, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

NOTHING_TO_REWRITE = 3

INT_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
    onnx.TensorProto.UINT16, onnx.TensorProto.INT32, onnx.TensorProto.UINT32,
    onnx.TensorProto.INT64, onnx.TensorProto.UINT64,
}
for _name in ("INT4", "UINT4", "INT2", "UINT2"):  # newer packed types, when onnx knows them
    if hasattr(onnx.TensorProto, _name):
        INT_TYPES.add(getattr(onnx.TensorProto, _name))

BINARY_OPS = ("Add", "Sub", "Mul", "Div")


class Skip(Exception):
    """A candidate Gather that matches the pattern but cannot be rewritten; the message says why."""


@dataclass
class Const:
    """A constant operand: the tensor name in the graph and its value."""
    name: str
    value: np.ndarray


@dataclass
class Step:
    """One elementwise step of the dequantisation chain, in data-flow order (table first)."""
    node: onnx.NodeProto            # the original node (for its op, attributes, name)
    op: str                         # "Cast", "DequantizeLinear" or a BINARY_OPS op
    consts: list = field(default_factory=list)  # Const operands (binary op: 1; DQ: scale[, zp])
    const_left: bool = False        # binary op: the constant is the first input


class Graph:
    """Index of the main graph: producers, consumers, constants."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.inits = {t.name: t for t in self.g.initializer}
        self.graph_inputs = {i.name for i in self.g.input}
        self.producer = {o: n for n in self.g.node for o in n.output if o}
        # Tensor names and node names are separate namespaces in ONNX.
        self.used = {"tensor": set(self.inits) | self.graph_inputs, "node": set()}
        for n in self.g.node:
            self.used["tensor"].update(n.output)
            self.used["node"].add(n.name)

    def consumers(self) -> dict[str, int]:
        """How many times each tensor is read: node inputs (subgraphs included) and graph outputs."""
        count: dict[str, int] = defaultdict(int)

        def walk(graph: onnx.GraphProto):
            for n in graph.node:
                for i in n.input:
                    count[i] += 1
                for a in n.attribute:  # If/Loop/Scan bodies may read outer-scope names
                    if a.type == onnx.AttributeProto.GRAPH:
                        walk(a.g)
                    for sub in a.graphs:
                        walk(sub)
            for o in graph.output:
                count[o.name] += 1

        walk(self.g)
        return count

    def fresh(self, base: str, kind: str = "tensor") -> str:
        """A tensor (or node) name not used yet in the graph."""
        name, k = base, 1
        while name in self.used[kind]:
            name, k = f"{base}_{k}", k + 1
        self.used[kind].add(name)
        return name

    def const(self, name: str, depth: int = 0) -> np.ndarray | None:
        """The value of `name` if it is a constant: an initializer that is not also a graph input,
        a Constant node's `value`, or a Cast of such a constant (a cast zero point). Else None."""
        if name in self.inits:
            return None if name in self.graph_inputs else numpy_helper.to_array(self.inits[name])
        p = self.producer.get(name)
        if p is None or depth > 2:
            return None
        if p.op_type == "Constant":
            for a in p.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
            return None
        if p.op_type == "Cast":
            v = self.const(p.input[0], depth + 1)
            if v is None:
                return None
            to = helper.get_attribute_value(p.attribute[0])
            try:
                return v.astype(helper.tensor_dtype_to_np_dtype(to))
            except (KeyError, TypeError, ValueError):
                return None
        return None


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def trace_chain(G: Graph, data: str) -> tuple[str, list[Step]] | None:
    """Walk back from a Gather's data input through the dequantisation steps.

    Returns (table initializer name, steps in data-flow order) when `data` is computed from a
    constant integer initializer by Cast / DequantizeLinear / binary-op-with-constant steps, with
    at least one Cast or DequantizeLinear; None when it is anything else (nothing to do)."""
    found = _trace(G, data)
    if found is None:
        return None
    name, steps = found
    table = G.inits[name]
    if table.data_type not in INT_TYPES:
        return None
    if not any(s.op in ("Cast", "DequantizeLinear") for s in steps):
        return None
    if name in G.graph_inputs:
        raise Skip(f"table {name!r} is also a graph input (overridable), not a constant")
    return name, steps


def _size(G: Graph, name: str) -> int:
    """Element count of the initializer/Constant a constant tensor comes from (Casts followed)."""
    while name not in G.inits:
        p = G.producer[name]
        if p.op_type == "Constant":
            return int(np.prod([d for a in p.attribute if a.name == "value" for d in a.t.dims]))
        name = p.input[0]
    return int(np.prod(G.inits[name].dims))


def _trace(G: Graph, name: str) -> tuple[str, list[Step]] | None:
    """(source initializer, steps in data-flow order) for the chain ending at `name`, or None."""
    if name in G.inits:
        return name, []
    p = G.producer.get(name)
    if p is None:
        return None  # a graph input
    if p.op_type == "Cast":
        r = _trace(G, p.input[0])
        return r and (r[0], r[1] + [Step(p, "Cast")])
    if p.op_type in BINARY_OPS and len(p.input) == 2:
        # Which input is the table and which the constant operand? Both may be constants in
        # ONNX's sense (Cast(q) is as constant as Cast(zero_point)), so: the side that traces
        # back to an initializer, with a constant on the other side; if both qualify, the
        # bigger one is the table (the operand only broadcasts against it).
        options = []
        for side in (0, 1):
            x, c = p.input[side], p.input[1 - side]
            if G.const(c) is None:
                continue
            r = _trace(G, x)
            if r is not None:
                options.append((_size(G, x) if G.const(x) is not None else 1 << 62, side, r))
        if not options:
            return None
        _, side, (table, steps) = max(options, key=lambda o: o[0])
        c = p.input[1 - side]
        return table, steps + [Step(p, p.op_type, [Const(c, G.const(c))], const_left=side == 1)]
    if p.op_type == "DequantizeLinear":
        if p.input[0] not in G.inits:
            return None  # we only move past a DQ that reads the table itself
        consts = []
        for i in p.input[1:]:
            if not i:
                continue
            v = G.const(i)
            if v is None:
                return None  # a runtime scale: not a constant dequantisation
            consts.append(Const(i, v))
        return p.input[0], [Step(p, "DequantizeLinear", consts)]
    return None


class Rewriter:
    """Builds the replacement nodes for one Gather."""

    def __init__(self, G: Graph, gather: onnx.NodeProto, table: str, steps: list[Step]):
        self.G, self.gather, self.steps = G, gather, steps
        self.tname = table
        self.tshape = list(G.inits[table].dims)
        self.rank = len(self.tshape)
        axis = attr(gather, "axis", 0)
        self.axis = axis + self.rank if axis < 0 else axis
        self.ids = gather.input[1]
        self.base = gather.name or gather.output[0]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.notes: list[str] = []

    def new_init(self, base: str, value: np.ndarray) -> str:
        name = self.G.fresh(base)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], like: onnx.NodeProto | None = None,
             output: str | None = None, label: str | None = None, **attrs) -> str:
        """Append a node; the output gets a fresh name unless given."""
        label = label or op.lower()
        out = output or self.G.fresh(f"{self.base}_{label}_rows")
        n = helper.make_node(op, inputs, [out],
                             name=self.G.fresh(f"{self.base}_{label}_rows", "node"), **attrs)
        if like is not None:  # keep the original attributes (Cast's `to`, DQ's axis, ...)
            del n.attribute[:]
            n.attribute.extend(like.attribute)
        self.nodes.append(n)
        return out

    def gathered_const(self, c: Const) -> str:
        """The name of a tensor equal to constant `c` as applied to the gathered rows.

        `c` broadcasts (numpy rules) against the table, shape V = [v0 .. v(r-1)]; left-pad its
        shape to rank r: [c0 .. c(r-1)], each ci 1 or vi. Gather along axis a turns V into
        V[:a] + ids.shape + V[a+1:]. Then:
          * ca == va (varies along the gathered axis, e.g. a per-row scale): Gather(c, ids, a)
            gives exactly the matching rows with the right rank.
          * ca == 1 and c0..c(a-1) all 1: only the trailing dims matter; c with shape V[a+1:]-like
            (its trailing dims) broadcasts correctly as is.
          * ca == 1 but some earlier ci > 1: would need the ids' rank to place it; skipped."""
        v = c.value
        if v.ndim > self.rank:
            raise Skip(f"constant {c.name!r} has rank {v.ndim} > table rank {self.rank}")
        full = (1,) * (self.rank - v.ndim) + v.shape
        a = self.axis
        if full[a] != 1:
            if full[a] != self.tshape[a]:
                raise Skip(f"constant {c.name!r} shape {list(v.shape)} does not broadcast "
                           f"against the table {self.tshape}")
            name = c.name
            if v.ndim != self.rank:  # pad to the table's rank so Gather's axis lines up
                name = self.new_init(f"{c.name}_r{self.rank}", v.reshape(full))
            self.notes.append(f"{c.name} {list(v.shape)} gathered")
            return self.node("Gather", [name, self.ids], label="gather_const", axis=a)
        if any(d != 1 for d in full[:a]):
            raise Skip(f"constant {c.name!r} shape {list(v.shape)} varies before the gathered "
                       f"axis {a} but not along it")
        trailing = full[a + 1:]
        if v.ndim <= len(trailing):
            return c.name  # already right-aligned on the trailing dims
        return self.new_init(f"{c.name}_trailing", v.reshape(trailing))

    def build(self) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], list[str]]:
        cur = self.node("Gather", [self.tname, self.ids], label="gather_q", axis=self.axis)
        last = len(self.steps) - 1
        for k, s in enumerate(self.steps):
            out = self.gather.output[0] if k == last else None
            if s.op == "Cast":
                cur = self.node("Cast", [cur], like=s.node, output=out)
            elif s.op in BINARY_OPS:
                c = self.gathered_const(s.consts[0])
                ins = [c, cur] if s.const_left else [cur, c]
                cur = self.node(s.op, ins, like=s.node, output=out)
            else:
                cur = self.dequantize(s, cur, out)
        return self.nodes, self.inits, self.notes

    def dequantize(self, s: Step, cur: str, out: str | None) -> str:
        """DequantizeLinear on the gathered rows: unchanged for a per-tensor scale, with its axis
        re-based for a per-axis scale on another axis, as Cast→Sub→Mul for a per-axis scale along
        the gathered axis (gathering the scale/zero point)."""
        if attr(s.node, "block_size", 0):
            raise Skip(f"blocked DequantizeLinear {s.node.name!r}")
        if attr(s.node, "output_dtype", 0):
            raise Skip(f"DequantizeLinear {s.node.name!r} with output_dtype")
        scale = s.consts[0]
        if scale.value.size == 1:  # per tensor: same node on the rows
            return self.node("DequantizeLinear", [cur] + list(s.node.input[1:]), like=s.node,
                             output=out)
        dq_axis = attr(s.node, "axis", 1)
        dq_axis = dq_axis + self.rank if dq_axis < 0 else dq_axis
        if dq_axis != self.axis:
            # Axes before the gathered one keep their index; axes after it keep their index
            # counted from the end (ids may add dims in the middle).
            new_axis = dq_axis if dq_axis < self.axis else dq_axis - self.rank
            n = helper.make_node("DequantizeLinear", [cur] + list(s.node.input[1:]),
                                 [out or self.G.fresh(f"{self.base}_dequantizelinear_rows")],
                                 name=self.G.fresh(f"{self.base}_dequantizelinear_rows", "node"),
                                 axis=new_axis)
            self.nodes.append(n)
            return n.output[0]
        # Per-axis along the gathered axis: (q - zp) * scale with zp/scale gathered per row.
        shape = [1] * self.rank
        shape[self.axis] = self.tshape[self.axis]
        fdtype = scale.value.dtype
        cur = self.node("Cast", [cur], to=helper.np_dtype_to_tensor_dtype(fdtype))
        if len(s.consts) > 1:
            zp = s.consts[1].value.astype(fdtype).reshape(shape)
            zp_name = self.new_init(f"{s.consts[1].name}_f", zp)
            cur = self.node("Sub", [cur, self.gathered_const(Const(zp_name, zp))])
        sc_name = self.new_init(f"{scale.name}_r{self.rank}", scale.value.reshape(shape))
        return self.node("Mul", [cur, self.gathered_const(Const(sc_name, scale.value.reshape(shape)))],
                         output=out)


def describe(G: Graph, table: str, steps: list[Step]) -> str:
    t = G.inits[table]
    dt = helper.tensor_dtype_to_string(t.data_type).replace("TensorProto.", "").lower()
    chain = " → ".join(f"{s.op} {s.node.name!r}" for s in steps)
    return f"{table!r} ({dt} {list(t.dims)}) → {chain}"


def rewrite(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Rewrite `model` in place. Returns (lines for rewritten Gathers, lines for skipped ones)."""
    G = Graph(model)
    g = G.g
    done, skipped = [], []
    replacements: dict[int, list[onnx.NodeProto]] = {}
    old_chain: list[onnx.NodeProto] = []
    for idx, n in enumerate(g.node):
        if n.op_type != "Gather" or n.domain not in ("", "ai.onnx"):
            continue
        try:
            found = trace_chain(G, n.input[0])
            if found is None:
                continue
            table, steps = found
            nodes, inits, notes = Rewriter(G, n, table, steps).build()
        except Skip as e:
            skipped.append(f"skipped Gather {n.name!r}: {e}")
            continue
        replacements[idx] = nodes
        g.initializer.extend(inits)
        old_chain.extend(s.node for s in steps)
        extra = f"; {', '.join(notes)}" if notes else ""
        done.append(f"rewrote Gather {n.name!r} (axis {attr(n, 'axis', 0)}): data was "
                    f"{describe(G, table, steps)}; now "
                    f"{', '.join(f'{x.op_type} {x.name!r}' for x in nodes)}{extra}")
    if not replacements:
        return done, skipped

    # Splice the new nodes in where each Gather was (ids and constants are all defined before
    # that point, so the node list stays topologically sorted).
    new_nodes = []
    for idx, n in enumerate(g.node):
        new_nodes.extend(replacements.get(idx, [n]))
    del g.node[:]
    g.node.extend(new_nodes)

    # Remove the old dequantisation nodes that nothing reads any more (only those: every other
    # node stays), last step first so a dead Mul frees its Cast.
    removed_outputs: set[str] = set()
    for _ in range(len(old_chain)):
        uses = G.consumers()
        dead = [n for n in old_chain if n in g.node and all(uses.get(o, 0) == 0 for o in n.output)]
        if not dead:
            break
        for n in dead:
            removed_outputs.update(n.output)
            g.node.remove(n)
    # Initializers that only the removed nodes read (e.g. a DQ zero point now folded) go too.
    uses = G.consumers()
    for t in list(g.initializer):
        if uses.get(t.name, 0) == 0 and t.name not in G.graph_inputs:
            if any(t.name in n.input for n in old_chain):
                g.initializer.remove(t)
    kept = {n.name or n.output[0]: None for n in old_chain if n in g.node}
    if kept:  # still read elsewhere (e.g. a tied output projection): the full dequantisation stays
        done.append(f"note: kept {', '.join(map(repr, kept))}: other nodes read their outputs")
    # value_info of tensors that no longer exist would confuse shape inference.
    for vi in list(g.value_info):
        if vi.name in removed_outputs:
            g.value_info.remove(vi)
    return done, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="ONNX model to read")
    ap.add_argument("output", help="ONNX model to write (not written when nothing is rewritten)")
    args = ap.parse_args(argv)
    try:
        model = onnx.load(args.input)
        ir, opsets = model.ir_version, [(o.domain, o.version) for o in model.opset_import]
        done, skipped = rewrite(model)
        for line in skipped:
            print(line)
        if not done:
            print(f"{args.input}: nothing to rewrite (no Gather reads a dequantised constant "
                  "integer initializer)")
            return NOTHING_TO_REWRITE
        for line in done:
            print(line)
        assert model.ir_version == ir and [(o.domain, o.version) for o in model.opset_import] == opsets
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, args.output)
        n = sum(line.startswith("rewrote") for line in done)
        print(f"wrote {args.output} ({n} Gather(s) rewritten; onnx.checker passed)")
        return 0
    except (OSError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

import { assertEquals } from "../../../tests/assert.ts";
import { encodeModel, f32Tensor, i64Tensor, ProtoWriter } from "./proto.ts";

type Field = { field: number; wire: number; value: bigint | Uint8Array | number };

/** A protobuf decoder for the test (varint, fixed32 and length-delimited fields): what the encoder must produce. */
function decode(bytes: Uint8Array): Field[] {
  const out: Field[] = [];
  let at = 0;
  const varint = () => {
    let v = 0n, shift = 0n;
    for (;;) {
      const b = bytes[at++];
      v |= BigInt(b & 0x7f) << shift;
      shift += 7n;
      if (!(b & 0x80)) return v;
    }
  };
  while (at < bytes.length) {
    const tag = Number(varint()), field = tag >> 3, wire = tag & 7;
    if (wire === 0) out.push({ field, wire, value: varint() });
    else if (wire === 5) {
      out.push({ field, wire, value: new DataView(bytes.buffer, bytes.byteOffset + at, 4).getFloat32(0, true) });
      at += 4;
    } else if (wire === 2) {
      const n = Number(varint());
      out.push({ field, wire, value: bytes.subarray(at, at + n) });
      at += n;
    } else throw new Error(`wire type ${wire}`);
  }
  if (at !== bytes.length) throw new Error("trailing bytes");
  return out;
}
const sub = (fs: Field[], field: number) =>
  fs.filter((f) => f.field === field).map((f) => decode(f.value as Uint8Array));
const str = (fs: Field[], field: number) =>
  fs.filter((f) => f.field === field).map((f) => new TextDecoder().decode(f.value as Uint8Array));
const ints = (fs: Field[], field: number) => fs.filter((f) => f.field === field).map((f) => f.value as bigint);

Deno.test("onnx proto: varints, negative int64s, floats and nested lengths decode back", () => {
  const big = new Uint8Array(300).map((_, i) => i & 0xff);
  const w = new ProtoWriter().int(1, 0).int(2, 300).int(3, -1).float(4, 1.5).raw(5, big)
    .message(6, (m) => m.string(1, "é").message(2, (n) => n.int(1, 2 ** 40)));
  const fs = decode(w.bytes());
  assertEquals(fs.map((f) => f.field), [1, 2, 3, 4, 5, 6]);
  assertEquals(fs[0].value, 0n);
  assertEquals(fs[1].value, 300n);
  assertEquals(fs[2].value, 2n ** 64n - 1n); // int64 −1: ten bytes, two's complement
  assertEquals(fs[3].value, 1.5);
  assertEquals(Array.from(fs[4].value as Uint8Array), Array.from(big));
  const inner = decode(fs[5].value as Uint8Array);
  assertEquals(str(inner, 1), ["é"]);
  assertEquals(ints(sub(inner, 2)[0], 1), [2n ** 40n]);
});

Deno.test("onnx proto: a model's fields sit where onnx.proto puts them", () => {
  const bytes = encodeModel({
    opsets: [{ domain: "", version: 18 }, { domain: "com.microsoft", version: 1 }],
    graph: {
      name: "g",
      nodes: [{
        op: "MatMulNBits",
        domain: "com.microsoft",
        name: "n0",
        inputs: ["x", "w"],
        outputs: ["y"],
        attrs: { K: { int: 64 }, alpha: { float: 0.5 }, perm: { ints: [1, 0] }, mode: { string: "a" } },
      }],
      inputs: [{ name: "x", elemType: "float32", dims: ["T", 64] }],
      outputs: [{ name: "y", elemType: "float32", dims: ["T", 8] }],
      initializers: [f32Tensor([2], [1, 2], "w"), i64Tensor([1], [-1], "c")],
    },
  });
  const model = decode(bytes);
  assertEquals(ints(model, 1), [8n]); // ir_version
  const opsets = sub(model, 8);
  assertEquals(opsets.map((o) => [str(o, 1)[0] ?? "", ints(o, 2)[0]]), [["", 18n], ["com.microsoft", 1n]]);
  const [graph] = sub(model, 7);
  assertEquals(str(graph, 2), ["g"]);
  const [node] = sub(graph, 1);
  assertEquals([str(node, 1), str(node, 2), str(node, 3), str(node, 4), str(node, 7)], [
    ["x", "w"],
    ["y"],
    ["n0"],
    ["MatMulNBits"],
    ["com.microsoft"],
  ]);
  const attrs = sub(node, 5);
  assertEquals(attrs.map((a) => [str(a, 1)[0], ints(a, 20)[0]]), [["K", 2n], ["alpha", 1n], ["perm", 7n], [
    "mode",
    3n,
  ]]);
  assertEquals(ints(attrs[0], 3), [64n]);
  assertEquals(attrs[1].find((f) => f.field === 2)!.value, 0.5);
  assertEquals(ints(attrs[2], 8), [1n, 0n]);
  const [w, c] = sub(graph, 5);
  assertEquals([ints(w, 1), ints(w, 2), str(w, 8)], [[2n], [1n], ["w"]]);
  assertEquals(Array.from(new Float32Array((w.find((f) => f.field === 9)!.value as Uint8Array).slice().buffer)), [
    1,
    2,
  ]);
  assertEquals([ints(c, 2), str(c, 8)], [[7n], ["c"]]);
  // Inputs: name, then type.tensor_type { elem_type, shape { dim { dim_param | dim_value } } }.
  const [x] = sub(graph, 11);
  assertEquals(str(x, 1), ["x"]);
  const [tensorType] = sub(sub(x, 2)[0], 1);
  assertEquals(ints(tensorType, 1), [1n]);
  const dims = sub(sub(tensorType, 2)[0], 1);
  assertEquals([str(dims[0], 2), ints(dims[1], 1)], [["T"], [64n]]);
  assertEquals(str(sub(graph, 12)[0], 1), ["y"]);
});

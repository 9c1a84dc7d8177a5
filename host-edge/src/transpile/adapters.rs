//! Rewrites of the core Wasm that js-component-bindgen emits, made on the
//! parsed module (wasmparser → wasm-encoder), never on its bytes as text.
//!
//! The adapters between two components' memories (wasmtime-environ's "fact"
//! trampolines, which js-component-bindgen emits as core modules when it
//! transpiles with multi-memory) copy a `list<u8>` one byte per iteration:
//!
//! ```text
//! loop
//!   local.get $dst  local.get $src  i32.load8_u (memory A)  i32.store8 (memory B)
//!   local.get $src  i32.const 1  i32.add  local.set $src
//!   local.get $dst  i32.const 1  i32.add  local.set $dst
//!   local.get $n  i32.const -1  i32.add  local.tee $n  br_if 0
//! end
//! ```
//!
//! Entered only with `$n > 0`, after both ranges were checked against their
//! memories (the source by the adapter, the destination given by `realloc`).
//! It becomes one `memory.copy` and the same final values of the three locals:
//! the same bytes, the same traps, a 600 KB tensor in one instruction instead
//! of 600,000 iterations.
//!
//! Every loop that moves bytes between two memories is counted, matched or
//! not: a byte loop of another shape (another generator version) fails the
//! pack with both counts, so a silent miss cannot happen.
//!
//! With `sync_only` (the caller has checked that nothing in the composition
//! is async or uses context slots, and that its calls run one way: component
//! → provider → host), the adapters' task bookkeeping, each piece a call out
//! to JavaScript, becomes nothing:
//!
//! * `async.enter-sync-call` / `exit-sync-call` make and end a subtask and a
//!   task for the callee, take its exclusive lock and track borrowed handles.
//!   With no async there is no lock to take; the provider's own imports find
//!   no current task and the glue makes one for them (its "backwards compat"
//!   path for sync imports); and a lent handle's owner, the calling component,
//!   cannot run before the call returns, so lending is never observed.
//! * `context.get0/1` and `set0/1` save, clear and restore the two context
//!   slots around `realloc` and `post-return`: no one reads a slot.
//!
//! Enter becomes `drop drop drop` (its three arguments), a get `i32.const 0`,
//! a set `drop`, exit nothing.

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{Function, Instruction};
use wasmparser::{Operator, Parser};

/// What [`rewrite`] found and did in one module.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Loops that move bytes between two memories.
    pub byte_loops: usize,
    /// Of those, the ones turned into `memory.copy`.
    pub byte_copies: usize,
    /// Imported bookkeeping functions (context slots, enter/exit-sync-call).
    pub bookkeeping_imports: usize,
    /// Calls to them removed.
    pub bookkeeping_calls: usize,
}

/// The module rewritten, and the counts. A module with nothing to rewrite
/// comes back byte for byte.
pub fn rewrite(module: &[u8], sync_only: bool) -> anyhow::Result<(Vec<u8>, Counts)> {
    let mut r = Rewriter {
        bookkeeping: if sync_only {
            bookkeeping_imports(module)?
        } else {
            Vec::new()
        },
        ..Rewriter::default()
    };
    let mut out = wasm_encoder::Module::new();
    r.parse_core_module(&mut out, Parser::new(0), module)
        .map_err(|e| anyhow::anyhow!("re-encoding a core module: {e}"))?;
    let counts = Counts {
        byte_loops: r.byte_loops,
        byte_copies: r.byte_copies,
        bookkeeping_imports: r.bookkeeping.len(),
        bookkeeping_calls: r.bookkeeping_calls,
    };
    if counts.byte_copies == 0 && counts.bookkeeping_calls == 0 {
        return Ok((module.to_vec(), counts));
    }
    let bytes = out.finish();
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&bytes)
        .map_err(|e| anyhow::anyhow!("the rewritten adapter module does not validate: {e}"))?;
    Ok((bytes, counts))
}

/// An imported bookkeeping function and what a call to it becomes.
struct Bookkeeping {
    func: u32,
    /// Arguments dropped.
    drops: u32,
    /// A zero pushed in place of its result.
    zero: bool,
}

#[derive(Default)]
struct Rewriter {
    bookkeeping: Vec<Bookkeeping>,
    byte_loops: usize,
    byte_copies: usize,
    bookkeeping_calls: usize,
}

/// The module's imported bookkeeping functions, by the names the adapters
/// import them under (wasmtime-environ's fact.rs).
fn bookkeeping_imports(module: &[u8]) -> anyhow::Result<Vec<Bookkeeping>> {
    let mut found = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ImportSection(imports) = payload? {
            let mut func = 0u32;
            for import in imports.into_imports() {
                let import = import?;
                if let wasmparser::TypeRef::Func(_) = import.ty {
                    let (drops, zero) = match (import.module, import.name) {
                        ("context", "get0" | "get1") => (0, true),
                        ("context", "set0" | "set1") => (1, false),
                        ("async", "enter-sync-call") => (3, false),
                        ("async", "exit-sync-call") => (0, false),
                        _ => (u32::MAX, false),
                    };
                    if drops != u32::MAX {
                        found.push(Bookkeeping { func, drops, zero });
                    }
                    func += 1;
                }
            }
        }
    }
    Ok(found)
}

impl Reencode for Rewriter {
    type Error = std::convert::Infallible;

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        let mut f: Function = self.new_function_with_parsed_locals(&func)?;
        let mut ops = Vec::new();
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            ops.push(reader.read()?);
        }
        let mut i = 0;
        while i < ops.len() {
            if let Operator::Call { function_index } = ops[i]
                && let Some(b) = self.bookkeeping.iter().find(|b| b.func == function_index)
            {
                self.bookkeeping_calls += 1;
                for _ in 0..b.drops {
                    f.instruction(&Instruction::Drop);
                }
                if b.zero {
                    f.instruction(&Instruction::I32Const(0));
                }
                i += 1;
                continue;
            }
            if let Operator::Loop { .. } = ops[i] {
                let body = loop_body(&ops[i + 1..]);
                if moves_bytes_between_memories(body) {
                    self.byte_loops += 1;
                    if let Some(copy) = ByteLoop::parse(body) {
                        self.byte_copies += 1;
                        for ins in copy.replacement() {
                            f.instruction(&ins);
                        }
                        // The loop, its body and its `end`.
                        i += body.len() + 2;
                        continue;
                    }
                }
            }
            f.instruction(&self.instruction(ops[i].clone())?);
            i += 1;
        }
        code.function(&f);
        Ok(())
    }
}

/// The operators of the loop that starts just before `ops`, up to (not
/// including) its `end`; all of `ops` when it never ends (invalid code,
/// which the parser has refused by then).
fn loop_body<'a, 'b>(ops: &'b [Operator<'a>]) -> &'b [Operator<'a>] {
    let mut depth = 0usize;
    for (i, op) in ops.iter().enumerate() {
        match op {
            Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::TryTable { .. }
            | Operator::Try { .. } => depth += 1,
            Operator::End if depth == 0 => return &ops[..i],
            Operator::End => depth -= 1,
            _ => {}
        }
    }
    ops
}

/// An innermost loop (an outer one is judged by its inner ones) that loads
/// bytes from one memory and stores bytes to another.
fn moves_bytes_between_memories(body: &[Operator<'_>]) -> bool {
    if body.iter().any(|op| matches!(op, Operator::Loop { .. })) {
        return false;
    }
    let loads: Vec<u32> = body
        .iter()
        .filter_map(|op| match op {
            Operator::I32Load8U { memarg } | Operator::I32Load8S { memarg } => Some(memarg.memory),
            _ => None,
        })
        .collect();
    body.iter().any(|op| match op {
        Operator::I32Store8 { memarg } => loads.iter().any(|&m| m != memarg.memory),
        _ => false,
    })
}

/// The one shape of byte loop this rewrite knows (see the module's comment).
struct ByteLoop {
    src: u32,
    dst: u32,
    n: u32,
    src_mem: u32,
    dst_mem: u32,
}

impl ByteLoop {
    fn parse(body: &[Operator<'_>]) -> Option<ByteLoop> {
        use Operator as O;
        let [
            O::LocalGet { local_index: d0 },
            O::LocalGet { local_index: s0 },
            O::I32Load8U { memarg: load },
            O::I32Store8 { memarg: store },
            O::LocalGet { local_index: s1 },
            O::I32Const { value: 1 },
            O::I32Add,
            O::LocalSet { local_index: s2 },
            O::LocalGet { local_index: d1 },
            O::I32Const { value: 1 },
            O::I32Add,
            O::LocalSet { local_index: d2 },
            O::LocalGet { local_index: n0 },
            O::I32Const { value: -1 },
            O::I32Add,
            O::LocalTee { local_index: n1 },
            O::BrIf { relative_depth: 0 },
        ] = body
        else {
            return None;
        };
        let same = |a: &u32, b: &u32, c: &u32| a == b && b == c;
        let distinct = s0 != d0 && s0 != n0 && d0 != n0;
        (same(s0, s1, s2)
            && same(d0, d1, d2)
            && n0 == n1
            && distinct
            && load.offset == 0
            && store.offset == 0
            && load.memory != store.memory)
            .then_some(ByteLoop {
                src: *s0,
                dst: *d0,
                n: *n0,
                src_mem: load.memory,
                dst_mem: store.memory,
            })
    }

    /// `memory.copy`, then the locals as the loop leaves them.
    fn replacement(&self) -> Vec<Instruction<'static>> {
        use Instruction as I;
        vec![
            I::LocalGet(self.dst),
            I::LocalGet(self.src),
            I::LocalGet(self.n),
            I::MemoryCopy {
                src_mem: self.src_mem,
                dst_mem: self.dst_mem,
            },
            I::LocalGet(self.src),
            I::LocalGet(self.n),
            I::I32Add,
            I::LocalSet(self.src),
            I::LocalGet(self.dst),
            I::LocalGet(self.n),
            I::I32Add,
            I::LocalSet(self.dst),
            I::I32Const(0),
            I::LocalSet(self.n),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop as wasmtime-environ 49 writes it, in a function of its own.
    const ADAPTER: &str = r#"(module
      (memory $a 1) (memory $b 1)
      (func (export "copy") (param $src i32) (param $dst i32) (param $len i32)
        (local $n i32) (local $s i32) (local $d i32)
        (block
          local.get $len local.tee $n i32.eqz br_if 0
          local.get $src local.set $s
          local.get $dst local.set $d
          (loop
            local.get $d local.get $s i32.load8_u $a i32.store8 $b
            local.get $s i32.const 1 i32.add local.set $s
            local.get $d i32.const 1 i32.add local.set $d
            local.get $n i32.const -1 i32.add local.tee $n br_if 0)))
      (func (export "other") (param i32) (result i32)
        (loop (result i32) local.get 0 i32.load8_u $a)))"#;

    /// How many of each operator the module's code holds, by name.
    fn count(module: &[u8], name: &str) -> usize {
        let mut n = 0;
        for payload in Parser::new(0).parse_all(module) {
            if let wasmparser::Payload::CodeSectionEntry(body) = payload.unwrap() {
                let mut ops = body.get_operators_reader().unwrap();
                while !ops.eof() {
                    let op = format!("{:?}", ops.read().unwrap());
                    n += usize::from(op.split([' ', '{']).next() == Some(name));
                }
            }
        }
        n
    }

    #[test]
    fn the_byte_loop_becomes_memory_copy() {
        let module = wat::parse_str(ADAPTER).unwrap();
        let (out, counts) = rewrite(&module, false).unwrap();
        assert_eq!((counts.byte_loops, counts.byte_copies), (1, 1));
        assert_eq!(count(&out, "MemoryCopy"), 1);
        assert_eq!(count(&out, "I32Store8"), 0);
        assert_eq!(
            count(&out, "I32Load8U"),
            1,
            "the other function keeps its load"
        );
    }

    #[test]
    fn a_byte_loop_of_another_shape_is_counted_not_rewritten() {
        // The same loop counting up instead of down.
        let other = ADAPTER.replace(
            "i32.const -1 i32.add local.tee $n",
            "i32.const 1 i32.sub local.tee $n",
        );
        let (out, counts) = rewrite(&wat::parse_str(&other).unwrap(), false).unwrap();
        assert_eq!((counts.byte_loops, counts.byte_copies), (1, 0));
        assert_eq!(count(&out, "I32Store8"), 1);
        assert_eq!(count(&out, "MemoryCopy"), 0);
    }

    #[test]
    fn a_module_without_byte_loops_is_left_alone() {
        let module = wat::parse_str("(module (memory 1) (func (loop)))").unwrap();
        let (out, counts) = rewrite(&module, true).unwrap();
        assert_eq!(counts, Counts::default());
        assert_eq!(out, module);
    }

    const BOOKKEEPING: &str = r#"(module
      (import "context" "get0" (func $get0 (result i32)))
      (import "other" "f" (func $f))
      (import "async" "enter-sync-call" (func $enter (param i32 i32 i32)))
      (import "context" "set0" (func $set0 (param i32)))
      (import "async" "exit-sync-call" (func $exit))
      (func (export "g") (local i32)
        i32.const 6 i32.const 0 i32.const 1 call $enter
        call $get0 local.set 0
        i32.const 0 call $set0
        call $f
        local.get 0 call $set0
        call $exit))"#;

    #[test]
    fn bookkeeping_is_left_alone_unless_sync_only() {
        let module = wat::parse_str(BOOKKEEPING).unwrap();
        let (out, counts) = rewrite(&module, false).unwrap();
        assert_eq!(out, module);
        assert_eq!(counts.bookkeeping_calls, 0);
        let (out, counts) = rewrite(&module, true).unwrap();
        assert_eq!(
            (counts.bookkeeping_imports, counts.bookkeeping_calls),
            (4, 5)
        );
        assert_eq!(count(&out, "Call"), 1, "only the other import is called");
        assert_eq!(
            count(&out, "Drop"),
            5,
            "enter's three arguments and the two sets'"
        );
    }
}

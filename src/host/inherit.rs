//! Script inheritance, as Perl's modules have it (`use base`): a module whose `MODULE`
//! says `extends: "linux"` has every routine and helper of `os/linux` it does not define
//! itself, and calls the version it overrides with `super::name(args)`.
//!
//! How: a child's effective AST is its parent's effective AST, plus a hidden copy of each of
//! the parent's functions under [`hidden_name`] (`__super_linux__post_load`), plus the
//! child's own functions, which replace the parent's of the same name and arity. Every call
//! — from the child's code or from code it inherited — goes to the most derived version, as
//! a Perl method call on `$self` does; `super::f(…)` written in a module whose parent is
//! `linux` calls `__super_linux__f`, the parent's version, whose own calls dispatch the same
//! way. The parent's top-level statements (imports, `const`s) run before the child's, so a
//! child may redefine a constant the parent's code reads with `global::`.
//!
//! `super::f(…)` is a custom syntax: its target is fixed when the file is compiled, from the
//! file's own `MODULE.extends` ([`compile`] reads it, then compiles again with it known).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, LexError, ParseError, Position, AST};

use crate::host::registry::ModuleKey;

/// The prefix of every hidden copy of a parent's function.
const HIDDEN: &str = "__super_";

/// A `super::name(…)` call found while compiling a file: what it calls, with how many
/// arguments (checked against the parent when the chain is resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperCall {
    pub name: String,
    pub arity: usize,
}

/// While a module file compiles: its parent (once known) and the `super::` calls seen.
struct Parse {
    /// `None` in the first pass (parent not known yet); `Some(None)`: no `extends`.
    parent: Option<Option<String>>,
    calls: Vec<SuperCall>,
}

thread_local! {
    static PARSE: RefCell<Option<Parse>> = const { RefCell::new(None) };
}

/// Restores the thread's parse state on drop (also when compiling panics).
struct ParseGuard;
impl Drop for ParseGuard {
    fn drop(&mut self) {
        PARSE.with(|p| p.borrow_mut().take());
    }
}

/// `linux` → `linux`, `a-b` → `a_db`, `a_b` → `a_ub`: an injective mapping of module names
/// onto identifier characters (every `_` of the result starts an escape).
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        match c {
            '_' => out.push_str("_u"),
            '-' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

/// The name under which a child's AST keeps `parent`'s version of `function`.
pub fn hidden_name(parent: &str, function: &str) -> String {
    format!("{HIDDEN}{}__{function}", encode(parent))
}

/// Is this one of the hidden copies (not a routine or helper a script defines)?
pub fn is_hidden(function: &str) -> bool {
    function.starts_with(HIDDEN)
}

/// `__super_linux__post_load` → `super::post_load (os/linux)`-style text for messages:
/// `("linux", "post_load")`, when `function` is a hidden copy.
pub fn split_hidden(function: &str) -> Option<(String, &str)> {
    let rest = function.strip_prefix(HIDDEN)?;
    let (enc, name) = rest.split_once("__")?;
    let mut parent = String::new();
    let mut chars = enc.chars();
    while let Some(c) = chars.next() {
        if c == '_' {
            match chars.next() {
                Some('u') => parent.push('_'),
                Some('d') => parent.push('-'),
                _ => return None,
            }
        } else {
            parent.push(c);
        }
    }
    Some((parent, name))
}

fn improper(message: String) -> ParseError {
    ParseError(
        Box::new(LexError::ImproperSymbol("super".into(), message).into()),
        Position::NONE,
    )
}

/// Register the `super::name(args…)` syntax on `engine`.
pub fn register(engine: &mut Engine) {
    engine.register_custom_syntax_with_state_raw(
        "super",
        |symbols: &[ImmutableString], look_ahead: &str, state: &mut Dynamic| {
            let n = symbols.len();
            let next = match n {
                1 => "::",
                2 => "$ident$",
                // The tokenizer reads an empty argument list as one token.
                3 if look_ahead == "()" => "()",
                3 => "(",
                _ => match symbols[n - 1].as_str() {
                    "(" if look_ahead == ")" => ")",
                    "(" | "," => "$expr$",
                    "$expr$" if look_ahead == "," => ",",
                    "$expr$" => ")",
                    _ => {
                        // Complete: `super :: name ( … )`.
                        let name = symbols[2].to_string();
                        let arity = symbols.iter().filter(|s| s.as_str() == "$expr$").count();
                        let mut bound = String::new();
                        let result = PARSE.with(|p| {
                            let mut p = p.borrow_mut();
                            let Some(p) = p.as_mut() else {
                                return Ok(());
                            };
                            p.calls.push(SuperCall {
                                name: name.clone(),
                                arity,
                            });
                            match &p.parent {
                                Some(None) => Err(improper(format!(
                                    "super::{name}(…) calls the parent's version, but this module's MODULE has no `extends`"
                                ))),
                                Some(Some(parent)) => {
                                    bound = hidden_name(parent, &name);
                                    Ok(())
                                }
                                None => Ok(()),
                            }
                        });
                        result?;
                        *state = Dynamic::from(bound);
                        return Ok(None);
                    }
                },
            };
            Ok(Some(next.into()))
        },
        false,
        |context, inputs, state| {
            let target = state.clone().into_immutable_string().unwrap_or_default();
            let name = inputs
                .first()
                .and_then(|e| e.get_string_value())
                .unwrap_or("?")
                .to_string();
            if target.is_empty() {
                return Err(format!(
                    "super::{name}(…) is only for a module script whose MODULE declares `extends`"
                )
                .into());
            }
            let mut args = Vec::with_capacity(inputs.len().saturating_sub(1));
            for e in inputs.iter().skip(1) {
                args.push(context.eval_expression_tree(e)?);
            }
            let mut refs: Vec<&mut Dynamic> = args.iter_mut().collect();
            context.call_fn_raw(target.as_str(), false, false, &mut refs)
        },
    );
}

/// A module file compiled on its own (before its parent is composed in).
pub struct Compiled {
    pub ast: AST,
    /// The `super::` calls it makes.
    pub super_calls: Vec<SuperCall>,
}

/// The literal `MODULE.extends` of a compiled file (`None`: absent or not a string).
pub fn declared_extends(ast: &AST) -> Option<String> {
    ast.iter_literal_variables(true, false)
        .find(|(name, _, _)| *name == "MODULE")
        .and_then(|(_, _, v)| v.read_lock::<rhai::Map>().map(|m| m.clone()))
        .and_then(|m| m.get("extends").cloned())
        .and_then(|v| v.into_immutable_string().ok())
        .map(|s| match s.split_once('/') {
            Some((_, name)) => name.to_string(),
            None => s.to_string(),
        })
}

/// Compile a module file into a self-contained AST. When it uses `super::`, it is compiled
/// a second time with its `MODULE.extends` known, so each `super::` call is bound to the
/// parent's hidden copy (or refused, with its position, when there is no `extends`).
pub fn compile(engine: &Engine, text: &str) -> Result<Compiled, Box<EvalAltResult>> {
    let _guard = ParseGuard;
    PARSE.with(|p| {
        *p.borrow_mut() = Some(Parse {
            parent: None,
            calls: Vec::new(),
        })
    });
    let ast = engine.compile_into_self_contained(&rhai::Scope::new(), text)?;
    let calls = PARSE.with(|p| p.borrow().as_ref().map(|p| p.calls.len()).unwrap_or(0));
    if calls == 0 {
        return Ok(Compiled {
            ast,
            super_calls: Vec::new(),
        });
    }
    let parent = declared_extends(&ast);
    PARSE.with(|p| {
        *p.borrow_mut() = Some(Parse {
            parent: Some(parent),
            calls: Vec::new(),
        })
    });
    let ast = engine.compile_into_self_contained(&rhai::Scope::new(), text)?;
    let super_calls = PARSE.with(|p| p.borrow_mut().take().map(|p| p.calls).unwrap_or_default());
    Ok(Compiled { ast, super_calls })
}

/// The line of the first `super::name(` in `source`, or 0.
pub fn super_line(source: &str, name: &str) -> usize {
    regex::Regex::new(&format!(
        r"super[ \t]*::[ \t]*{}[ \t]*\(",
        regex::escape(name)
    ))
    .ok()
    .and_then(|re| re.find(source))
    .map(|m| source[..m.start()].matches('\n').count() + 1)
    .unwrap_or(0)
}

/// Where a function of an effective AST was written: the module and its file.
#[derive(Debug, Clone)]
pub struct Origin {
    pub key: ModuleKey,
    pub path: PathBuf,
    pub source: Arc<str>,
}

/// Function name (as in the effective AST) → where it was written. Names only: with
/// overloads by arity the most derived definition wins, which is good enough for messages.
pub type Origins = BTreeMap<String, Arc<Origin>>;

/// The origins of a module with no parent: every function is its own.
pub fn own_origins(ast: &AST, origin: Arc<Origin>) -> Origins {
    ast.iter_functions()
        .map(|f| (f.name.to_string(), Arc::clone(&origin)))
        .collect()
}

/// Compose a child's effective AST from its parent's effective AST and its own (see the
/// module docs), with the origins of every function. The result's source is the child's.
pub fn compose(
    parent_name: &str,
    parent: &AST,
    parent_origins: &Origins,
    parent_origin: &Arc<Origin>,
    own: &AST,
    own_origin: Arc<Origin>,
) -> (AST, Origins) {
    let mut hidden = rhai::Module::new();
    let mut origins = parent_origins.clone();
    for (_, _, name, _, def) in parent.shared_lib().iter_script_fn_info() {
        if is_hidden(name) {
            continue;
        }
        let copy_name = hidden_name(parent_name, name);
        let mut copy = (**def).clone();
        copy.name = copy_name.clone().into();
        hidden.set_script_fn(copy);
        let from = parent_origins
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::clone(parent_origin));
        origins.insert(copy_name, from);
    }
    for f in own.iter_functions() {
        origins.insert(f.name.to_string(), Arc::clone(&own_origin));
    }
    let ast = parent.merge(&AST::new_from_module(hidden)).merge(own);
    (ast, origins)
}

/// The functions a script can call in an effective AST (hidden copies left out), as
/// (name, arity).
pub fn visible_functions(ast: &AST) -> Vec<(String, usize)> {
    ast.iter_functions()
        .filter(|f| !is_hidden(f.name))
        .map(|f| (f.name.to_string(), f.params.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut e = Engine::new();
        register(&mut e);
        e
    }

    fn origin(name: &str) -> Arc<Origin> {
        Arc::new(Origin {
            key: (crate::host::Kind::Os, name.into()),
            path: PathBuf::from(format!("os/{name}.rhai")),
            source: Arc::from(""),
        })
    }

    #[test]
    fn names_encode_injectively_and_split_back() {
        assert_eq!(
            hidden_name("linux", "post_load"),
            "__super_linux__post_load"
        );
        assert_ne!(hidden_name("a-b", "f"), hidden_name("a_db", "f"));
        for parent in ["linux", "a-b", "a_b", "x_-_y", "7"] {
            let h = hidden_name(parent, "add_user");
            assert!(rhai::is_valid_identifier(&h), "{h}");
            assert_eq!(split_hidden(&h), Some((parent.to_string(), "add_user")));
        }
        assert_eq!(split_hidden("post_load"), None);
    }

    #[test]
    fn child_overrides_calls_super_and_dispatches_to_the_most_derived() {
        let e = engine();
        let base = compile(
            &e,
            r#"const MODULE = #{ kind: "os", name: "base" };
               const GREETING = "base";
               fn who() { "base" }
               fn hello() { `${global::GREETING}:${who()}` }
               fn twice(x) { x * 2 }"#,
        )
        .expect("base");
        assert!(base.super_calls.is_empty());
        let child = compile(
            &e,
            r#"const MODULE = #{ kind: "os", name: "child", extends: "base" };
               const GREETING = "child";
               fn who() { "child<" + super::who() + ">" }
               fn twice(x) { super::twice(x) + 1 }"#,
        )
        .expect("child");
        assert_eq!(
            child.super_calls,
            vec![
                SuperCall {
                    name: "who".into(),
                    arity: 0
                },
                SuperCall {
                    name: "twice".into(),
                    arity: 1
                }
            ]
        );
        let base_origins = own_origins(&base.ast, origin("base"));
        let (eff, origins) = compose(
            "base",
            &base.ast,
            &base_origins,
            &origin("base"),
            &child.ast,
            origin("child"),
        );
        // hello() is inherited; its call to who() reaches the child's override, which
        // calls the parent's; the child's constant wins.
        let hello: String = e
            .call_fn(&mut rhai::Scope::new(), &eff, "hello", ())
            .expect("hello");
        assert_eq!(hello, "child:child<base>");
        let twice: i64 = e
            .call_fn(&mut rhai::Scope::new(), &eff, "twice", (5_i64,))
            .expect("twice");
        assert_eq!(twice, 11);
        assert_eq!(origins["hello"].key.1, "base");
        assert_eq!(origins["who"].key.1, "child");
        assert_eq!(origins["__super_base__who"].key.1, "base");
        let visible = visible_functions(&eff);
        assert!(
            visible.contains(&("hello".into(), 0)) && !visible.iter().any(|(n, _)| is_hidden(n))
        );
    }

    #[test]
    fn super_without_extends_is_a_compile_error_with_its_line() {
        let e = engine();
        let err = compile(
            &e,
            "const MODULE = #{ kind: \"os\", name: \"x\" };\n\nfn f() { super::f() }",
        )
        .err()
        .expect("refused");
        assert_eq!(err.position().line(), Some(3), "{err}");
        assert!(err.to_string().contains("has no `extends`"), "{err}");
    }
}

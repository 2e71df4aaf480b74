//! One method of an `#[marten::apply]` block: its role (from its name) and its signature
//! (receiver, event parameter, optional metadata, return), each mistake recorded with its
//! span.

use syn::{FnArg, ImplItemFn, Receiver, ReturnType, Signature, Type};

use crate::internals::ctxt::Ctxt;

/// What a method does for the dispatch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// `create*(e) -> Self`: the first state.
    Create,
    /// `apply*(&mut self, e)` or, `by_value`, `apply*(self, e) -> Self`.
    Apply { by_value: bool },
    /// `should_delete*(&self, e) -> bool`.
    Delete,
    /// `identity*(e) -> Id` or, `many`, `identities*(e) -> Vec<Id>`.
    Identity { many: bool },
}

impl Role {
    /// The role's name in errors.
    pub fn label(self) -> &'static str {
        match self {
            Role::Create => "create",
            Role::Apply { .. } => "apply",
            Role::Delete => "should_delete",
            Role::Identity { .. } => "identity",
        }
    }
}

/// A checked dispatch method.
pub struct Method {
    /// What it does.
    pub role: Role,
    /// Its name (renamed when overloaded).
    pub name: syn::Ident,
    /// The event type it takes by reference.
    pub event: Type,
    /// Whether it takes the event's metadata second.
    pub with_meta: bool,
}

/// The role of a method, by its name's prefix; `None` for other methods.
pub fn role_of(name: &str) -> Option<Role> {
    if name.starts_with("should_delete") {
        Some(Role::Delete)
    } else if name.starts_with("create") {
        Some(Role::Create)
    } else if name.starts_with("apply") {
        Some(Role::Apply { by_value: false })
    } else if name.starts_with("identities") {
        Some(Role::Identity { many: true })
    } else if name.starts_with("identity") {
        Some(Role::Identity { many: false })
    } else {
        None
    }
}

/// Parses one method; `None` if it is not a dispatch method or is malformed (then the
/// error is recorded on its span).
pub fn parse_method(cx: &Ctxt, f: &ImplItemFn) -> Option<Method> {
    let name = f.sig.ident.clone();
    let role = role_of(&name.to_string())?;
    let sig = &f.sig;
    plain_fn(cx, sig, &name)?;
    let mut inputs = sig.inputs.iter();
    let receiver = match sig.inputs.first() {
        Some(FnArg::Receiver(r)) => {
            inputs.next();
            Some(r)
        }
        _ => None,
    };
    let role = receiver_role(cx, sig, role, receiver)?;
    let event = event_param(cx, sig, inputs.next())?;
    let with_meta = meta_param(cx, &name, inputs.next())?;
    if let Some(extra) = inputs.next() {
        cx.error_spanned_by(
            extra,
            format!("`{name}` takes the event and, optionally, its metadata; nothing more"),
        );
        return None;
    }
    returns_for(cx, sig, role)?;
    Some(Method {
        role,
        name,
        event,
        with_meta,
    })
}

/// Neither async nor generic.
fn plain_fn(cx: &Ctxt, sig: &Signature, name: &syn::Ident) -> Option<()> {
    if sig.asyncness.is_some() {
        cx.error_spanned_by(
            sig.asyncness,
            format!(
                "`{name}` cannot be async: apply methods are plain functions of state and event"
            ),
        );
        return None;
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            format!("`{name}` cannot be generic: each method handles one event type"),
        );
        return None;
    }
    Some(())
}

/// Checks the receiver against the role; an `apply` taking `self` by value returns the
/// new state.
fn receiver_role(
    cx: &Ctxt,
    sig: &Signature,
    role: Role,
    receiver: Option<&Receiver>,
) -> Option<Role> {
    let name = &sig.ident;
    let report = |other: Option<&Receiver>, msg: String| match other {
        Some(r) => cx.error_spanned_by(r, msg),
        None => cx.error_spanned_by(&sig.ident, msg),
    };
    match (role, receiver) {
        (Role::Create | Role::Identity { .. }, None) => Some(role),
        (Role::Create | Role::Identity { .. }, Some(r)) => {
            cx.error_spanned_by(r, format!("`{name}` takes no `self`: it is called without a state (e.g. `fn {name}(e: &ProjectStarted) -> Self`)"));
            None
        }
        (Role::Apply { .. }, Some(r)) if r.reference.is_some() && r.mutability.is_some() => {
            Some(role)
        }
        (Role::Apply { .. }, Some(r)) if r.reference.is_none() => {
            Some(Role::Apply { by_value: true })
        }
        (Role::Apply { .. }, other) => {
            report(other, format!("`{name}` takes `&mut self` (change the state in place) or `self` (return the new state)"));
            None
        }
        (Role::Delete, Some(r)) if r.reference.is_some() && r.mutability.is_none() => Some(role),
        (Role::Delete, other) => {
            report(other, format!("`{name}` takes `&self` and returns `bool`"));
            None
        }
    }
}

/// The event type, from the parameter `e: &Event`.
fn event_param(cx: &Ctxt, sig: &Signature, arg: Option<&FnArg>) -> Option<Type> {
    let name = &sig.ident;
    let Some(event_arg) = arg else {
        cx.error_spanned_by(
            &sig.ident,
            format!("`{name}` needs the event as its parameter, e.g. `e: &TaskRecorded`"),
        );
        return None;
    };
    match event_arg {
        FnArg::Typed(pt) => match &*pt.ty {
            Type::Reference(r) if r.mutability.is_none() => Some((*r.elem).clone()),
            other => {
                cx.error_spanned_by(other, format!("the event parameter of `{name}` is a shared reference to the event, e.g. `e: &TaskRecorded`"));
                None
            }
        },
        FnArg::Receiver(r) => {
            cx.error_spanned_by(r, "unexpected `self`");
            None
        }
    }
}

/// Whether the method takes the event's metadata (`meta: &EventEnvelope`) second.
fn meta_param(cx: &Ctxt, name: &syn::Ident, arg: Option<&FnArg>) -> Option<bool> {
    match arg {
        None => Some(false),
        Some(FnArg::Typed(pt)) if matches!(&*pt.ty, Type::Reference(r) if r.mutability.is_none()) => {
            Some(true)
        }
        Some(other) => {
            cx.error_spanned_by(other, format!("the second parameter of `{name}`, if any, is the event's metadata: `meta: &EventEnvelope`"));
            None
        }
    }
}

/// Every role but `apply` in place returns something.
fn returns_for(cx: &Ctxt, sig: &Signature, role: Role) -> Option<()> {
    let returns = !matches!(sig.output, ReturnType::Default);
    match role {
        Role::Create | Role::Apply { by_value: true } | Role::Delete | Role::Identity { .. }
            if !returns =>
        {
            let what = match role {
                Role::Delete => "`bool`",
                Role::Identity { many: false } => "the document id",
                Role::Identity { many: true } => "a `Vec` of document ids",
                _ => "`Self` (or `Result<Self, E>`)",
            };
            let name = &sig.ident;
            cx.error_spanned_by(&sig.ident, format!("`{name}` must return {what}"));
            None
        }
        _ => Some(()),
    }
}

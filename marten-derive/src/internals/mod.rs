//! Parsing and checking of derive input, shared by the derives.

pub mod ast;
pub mod attr;
pub mod case;
pub mod check;
pub mod ctxt;

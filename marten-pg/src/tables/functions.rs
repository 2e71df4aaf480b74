//! The schema's functions: the batch guard that turns collected rejections into one
//! error at the end of a pipelined `save_changes`.

/// The transaction-local setting a rejected write sets to `t`.
pub const REJECTED_FLAG: &str = "marten.rejected";

/// The name of the guard function.
pub const GUARD_FUNCTION: &str = "mt_assert_no_rejections";

/// The statement that ends a checked batch; it raises [`REJECTED_SQLSTATE`] when any
/// write of the transaction was rejected.
pub const ASSERT_NO_REJECTIONS: &str = "SELECT mt_assert_no_rejections()";

/// The SQLSTATE the guard raises.
pub const REJECTED_SQLSTATE: &str = "MT409";

/// `CREATE OR REPLACE FUNCTION` for the guard in `schema`.
pub fn create_guard(schema: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {schema}.{GUARD_FUNCTION}() RETURNS void LANGUAGE plpgsql AS $$\n\
         BEGIN\n\
           IF current_setting('{REJECTED_FLAG}', true) = 't' THEN\n\
             RAISE EXCEPTION 'marten: operations of this batch were rejected' USING ERRCODE = '{REJECTED_SQLSTATE}';\n\
           END IF;\n\
         END $$"
    )
}

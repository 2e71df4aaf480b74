//! The master table of a database-per-tenant store (`mt_tenant_databases`: one row per
//! tenant added at run time, naming the connection string of its database) and every
//! statement run against it. The statements name the table with its schema (a checked
//! identifier); tenant ids and connection strings are always bound as parameters.

use crate::tables::def::{ColumnDef, TableDef};

/// The master table.
pub const TENANT_DATABASES_TABLE: &str = "mt_tenant_databases";

/// The master table as data.
pub fn table_def() -> TableDef {
    TableDef::new(
        TENANT_DATABASES_TABLE,
        vec![
            ColumnDef::new("tenant_id", "text", "PRIMARY KEY"),
            ColumnDef::new("connection_string", "text", "NOT NULL"),
        ],
    )
}

/// The statements on the master table in one schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStatements {
    /// The connection string of one tenant (`$1`: the tenant id).
    pub lookup: String,
    /// Every tenant and its connection string, by tenant id.
    pub all: String,
    /// Adds a tenant or changes its connection string (`$1`: the tenant id, `$2`: the
    /// connection string).
    pub upsert: String,
    /// Removes a tenant (`$1`: the tenant id).
    pub delete: String,
}

/// The statements on the master table in `schema` (a plain identifier).
pub fn statements(schema: &str) -> TenantStatements {
    let table = format!("{schema}.{TENANT_DATABASES_TABLE}");
    TenantStatements {
        lookup: format!("SELECT connection_string FROM {table} WHERE tenant_id = $1"),
        all: format!("SELECT tenant_id, connection_string FROM {table} ORDER BY tenant_id"),
        upsert: format!(
            "INSERT INTO {table} (tenant_id, connection_string) VALUES ($1, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET connection_string = excluded.connection_string"
        ),
        delete: format!("DELETE FROM {table} WHERE tenant_id = $1"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statements_name_the_table_in_its_schema_and_bind_their_values() {
        let s = statements("tenancy");
        for sql in [&s.lookup, &s.all, &s.upsert, &s.delete] {
            assert!(sql.contains("tenancy.mt_tenant_databases"), "{sql}");
        }
        assert!(s.lookup.ends_with("tenant_id = $1"));
        assert!(s.upsert.contains("VALUES ($1, $2)"));
        let ddl = table_def().ddl("tenancy").join(";\n");
        assert!(
            ddl.contains("CREATE TABLE IF NOT EXISTS tenancy.mt_tenant_databases"),
            "{ddl}"
        );
        assert!(ddl.contains("tenant_id text PRIMARY KEY"), "{ddl}");
        assert!(ddl.contains("connection_string text NOT NULL"), "{ddl}");
    }
}

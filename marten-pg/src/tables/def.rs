//! Tables as data: the columns, constraints, sequences and indexes a table of marten's
//! should have, and the DDL each of them renders to. The schema layer compares them with
//! the database; the DDL a store runs and the script a DBA reviews are both rendered
//! from them, so they cannot disagree. Pure text, no database.

/// A table marten expects: its columns and constraints (which `CREATE TABLE` renders),
/// the sequences created before it, its indexes and the statements that follow its
/// creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// The table's name (unqualified).
    pub name: String,
    /// Sequences created before the table (unqualified names).
    pub sequences: Vec<String>,
    /// The columns, in table order.
    pub columns: Vec<ColumnDef>,
    /// Table constraints (`PRIMARY KEY (..)`, `CONSTRAINT x UNIQUE (..)`).
    pub constraints: Vec<String>,
    /// The indexes created after the table (the indexes of constraints included, so
    /// that the schema check sees them).
    pub indexes: Vec<IndexDef>,
    /// Statements run after the table and its indexes are created (idempotent).
    pub after: Vec<String>,
}

/// A column of a [`TableDef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// The column's name.
    pub name: String,
    /// Its SQL type as DDL writes it (`bigint`, `text`, `uuid`).
    pub sql_type: String,
    /// What follows the type in its definition (`NOT NULL DEFAULT now()`, ...).
    pub rest: String,
}

/// An index of a [`TableDef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// The index's name (unqualified, before PostgreSQL cuts it to 63 bytes).
    pub name: String,
    /// Whether the index is unique.
    pub unique: bool,
    /// The access method (`btree`, `gin`).
    pub method: &'static str,
    /// The keys: a column, followed by its operator class when it is not the default
    /// (`data jsonb_path_ops`).
    pub keys: Vec<String>,
    /// Indexes this one replaces: the index of the same field under the other kind's
    /// name. The schema patch drops them once this one exists.
    pub replaces: Vec<String>,
    /// The predicate of a partial index, as PostgreSQL prints it back
    /// (`pg_get_expr(.., true)`: `NOT mt_deleted`), so the schema check compares it.
    pub predicate: Option<String>,
}

impl ColumnDef {
    /// A column `name sql_type rest`.
    pub fn new(name: &str, sql_type: &str, rest: &str) -> Self {
        ColumnDef {
            name: name.to_owned(),
            sql_type: sql_type.to_owned(),
            rest: rest.to_owned(),
        }
    }

    /// The column's definition, as `CREATE TABLE` and `ADD COLUMN` write it.
    pub fn definition(&self) -> String {
        if self.rest.is_empty() {
            format!("{} {}", self.name, self.sql_type)
        } else {
            format!("{} {} {}", self.name, self.sql_type, self.rest)
        }
    }

    /// The type as `format_type` prints it (`bigint`, `timestamp with time zone`) when
    /// its spelling is one of the common ones ([`known_type`]); `None` for any other,
    /// which the schema check asks the server about.
    pub fn known_type(&self) -> Option<&'static str> {
        known_type(&self.sql_type)
    }
}

/// A type's canonical name, as PostgreSQL's `format_type` prints it (and the schema
/// check reads a column's type), for the common spellings of types in DDL: marten's
/// own columns and the out-of-the-box column types. `None` for any other spelling
/// (`int`, `numeric(12,2)`, `varchar(20)`, a type of the user's own), whose canonical
/// name only the server knows. The serial pseudo-types name the type of their column.
pub fn known_type(sql_type: &str) -> Option<&'static str> {
    Some(match sql_type {
        "bigint" | "int8" | "bigserial" | "serial8" => "bigint",
        "integer" | "int4" | "serial" | "serial4" => "integer",
        "smallint" | "int2" | "smallserial" | "serial2" => "smallint",
        "boolean" | "bool" => "boolean",
        "double precision" | "float8" => "double precision",
        "real" | "float4" => "real",
        "text" => "text",
        "uuid" => "uuid",
        "jsonb" => "jsonb",
        "json" => "json",
        "bytea" => "bytea",
        "date" => "date",
        "numeric" => "numeric",
        "xid8" => "xid8",
        "timestamptz" | "timestamp with time zone" => "timestamp with time zone",
        "timestamp" | "timestamp without time zone" => "timestamp without time zone",
        _ => return None,
    })
}

impl IndexDef {
    /// A btree index.
    pub fn btree(name: &str, unique: bool, keys: &[&str]) -> Self {
        IndexDef {
            name: name.to_owned(),
            unique,
            method: "btree",
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            replaces: Vec::new(),
            predicate: None,
        }
    }

    /// The same index, partial: over the rows `predicate` holds for.
    pub fn partial(mut self, predicate: &str) -> Self {
        self.predicate = Some(predicate.to_owned());
        self
    }

    /// The index's shape, as schema differences show it: `UNIQUE btree (email)`,
    /// `btree (id) WHERE NOT mt_deleted`.
    pub fn shape(&self) -> String {
        shape(
            self.unique,
            self.method,
            &self.keys,
            self.predicate.as_deref(),
        )
    }

    /// `CREATE [UNIQUE] INDEX [CONCURRENTLY] IF NOT EXISTS` for the index on
    /// `schema.table`.
    pub fn create(&self, schema: &str, table: &str, concurrently: bool) -> String {
        let unique = if self.unique { "UNIQUE " } else { "" };
        let concurrently = if concurrently { "CONCURRENTLY " } else { "" };
        let using = if self.method == "btree" {
            String::new()
        } else {
            format!(" USING {}", self.method)
        };
        format!(
            "CREATE {unique}INDEX {concurrently}IF NOT EXISTS {} ON {schema}.{table}{using} ({}){}",
            self.name,
            self.keys.join(", "),
            where_clause(self.predicate.as_deref())
        )
    }
}

/// ` WHERE predicate` of a partial index, or nothing.
fn where_clause(predicate: Option<&str>) -> String {
    predicate.map_or_else(String::new, |p| format!(" WHERE {p}"))
}

/// An index's shape: `UNIQUE btree (a, b)`, followed by the predicate of a partial one.
pub fn shape(unique: bool, method: &str, keys: &[String], predicate: Option<&str>) -> String {
    let unique = if unique { "UNIQUE " } else { "" };
    format!(
        "{unique}{method} ({}){}",
        keys.join(", "),
        where_clause(predicate)
    )
}

/// `DROP INDEX [CONCURRENTLY] IF EXISTS schema.index`.
pub fn drop_index(schema: &str, index: &str, concurrently: bool) -> String {
    let concurrently = if concurrently { "CONCURRENTLY " } else { "" };
    format!("DROP INDEX {concurrently}IF EXISTS {schema}.{index}")
}

impl TableDef {
    /// A table with `columns` and nothing else yet.
    pub fn new(name: &str, columns: Vec<ColumnDef>) -> Self {
        TableDef {
            name: name.to_owned(),
            sequences: Vec::new(),
            columns,
            constraints: Vec::new(),
            indexes: Vec::new(),
            after: Vec::new(),
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` with every column and constraint.
    pub fn create(&self, schema: &str) -> String {
        let parts: Vec<String> = self
            .columns
            .iter()
            .map(ColumnDef::definition)
            .chain(self.constraints.iter().cloned())
            .collect();
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.{} (\n  {}\n)",
            self.name,
            parts.join(",\n  ")
        )
    }

    /// `ALTER TABLE .. ADD COLUMN IF NOT EXISTS` for one column.
    pub fn add_column(&self, schema: &str, column: &ColumnDef) -> String {
        format!(
            "ALTER TABLE {schema}.{} ADD COLUMN IF NOT EXISTS {}",
            self.name,
            column.definition()
        )
    }

    /// `CREATE SEQUENCE IF NOT EXISTS` for one of the table's sequences.
    pub fn create_sequence(schema: &str, sequence: &str) -> String {
        format!("CREATE SEQUENCE IF NOT EXISTS {schema}.{sequence}")
    }

    /// Everything that creates the table in `schema`, idempotent, in order: its
    /// sequences, the table, its indexes, the statements that follow.
    pub fn ddl(&self, schema: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .sequences
            .iter()
            .map(|s| Self::create_sequence(schema, s))
            .collect();
        out.push(self.create(schema));
        out.extend(
            self.indexes
                .iter()
                .map(|ix| ix.create(schema, &self.name, false)),
        );
        out.extend(self.after.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_renders_its_columns_constraints_and_indexes() {
        let mut t = TableDef::new(
            "t",
            vec![
                ColumnDef::new("id", "bigint", "PRIMARY KEY"),
                ColumnDef::new("note", "text", ""),
            ],
        );
        t.constraints.push("CONSTRAINT t_u UNIQUE (note)".into());
        t.indexes
            .push(IndexDef::btree("t_idx_note", false, &["note"]));
        let mut gin = IndexDef::btree("t_gin", false, &["data jsonb_path_ops"]);
        gin.method = "gin";
        t.indexes.push(gin);
        assert_eq!(
            t.ddl("s"),
            [
                "CREATE TABLE IF NOT EXISTS s.t (\n  id bigint PRIMARY KEY,\n  note text,\n  CONSTRAINT t_u UNIQUE (note)\n)",
                "CREATE INDEX IF NOT EXISTS t_idx_note ON s.t (note)",
                "CREATE INDEX IF NOT EXISTS t_gin ON s.t USING gin (data jsonb_path_ops)",
            ]
        );
        assert_eq!(
            t.indexes[0].create("s", "t", true),
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_idx_note ON s.t (note)"
        );
        assert_eq!(t.indexes[1].shape(), "gin (data jsonb_path_ops)");
        assert_eq!(
            t.add_column("s", &t.columns[1]),
            "ALTER TABLE s.t ADD COLUMN IF NOT EXISTS note text"
        );
        assert_eq!(t.columns[0].known_type(), Some("bigint"));
        assert_eq!(known_type("bigserial"), Some("bigint"));
        assert_eq!(known_type("timestamptz"), Some("timestamp with time zone"));
        assert_eq!(known_type("numeric(12,2)"), None);
        assert_eq!(
            drop_index("s", "x", true),
            "DROP INDEX CONCURRENTLY IF EXISTS s.x"
        );
    }
}

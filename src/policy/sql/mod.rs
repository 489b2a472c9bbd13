//! TEMPORARY STUB (replaced by the real walker).
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub statements: Vec<StatementInfo>,
}
#[derive(Debug, Clone, PartialEq)]
pub struct StatementInfo {
    pub kind: StatementKind,
    pub relations: Vec<RelationAccess>,
    pub functions: Vec<FunctionRef>,
    pub literal_sensitive: bool,
}
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelationAccess {
    pub schema: Option<String>,
    pub name: String,
    pub op: Operation,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Select,
    Insert,
    Update,
    Delete,
    Truncate,
    Ddl,
    Dcl,
    CopyTo,
    CopyFrom,
    Lock,
    Maintenance,
}
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionRef {
    pub schema: Option<String>,
    pub name: String,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Copy {
        to_program_or_file: bool,
    },
    Explain {
        analyze: bool,
    },
    Transaction,
    Set {
        name: String,
        value: Option<String>,
        local: bool,
    },
    Reset {
        name: Option<String>,
    },
    Show {
        name: String,
    },
    Discard,
    Prepare {
        name: String,
    },
    Execute {
        name: String,
    },
    Deallocate {
        name: Option<String>,
    },
    DeclareCursor {
        name: String,
    },
    FetchOrMove,
    ClosePortal,
    Listen {
        channel: String,
    },
    Notify {
        channel: String,
    },
    Unlisten,
    Ddl,
    Dcl,
    Do,
    Call,
    Lock,
    Maintenance,
    AlterSystem,
    LoadLibrary,
    Other(String),
}
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum AnalyzeError {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("tollgate cannot analyse this statement: {0}")]
    Unsupported(String),
}
pub fn analyze(_sql: &str) -> Result<Analysis, AnalyzeError> {
    Err(AnalyzeError::Unsupported("stub".into()))
}
pub fn is_safe_builtin_function(_f: &FunctionRef) -> bool {
    false
}

//! ringraft's load generator (`ringraft-load`) and the pieces it is made
//! of: the workload (keys, values, the open-loop schedule) and the report
//! (percentiles, JSON, `.hgrm`), and the CPU it used.

pub mod cpu;
pub mod report;
pub mod workload;

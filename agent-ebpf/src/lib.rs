//! Empty library target: lets `agent`'s build script depend on this crate so
//! cargo rebuilds the embedded object when the kernel sources change.
#![no_std]

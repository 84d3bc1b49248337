//! Unit tests of the Falco front end (condition translation, overrides,
//! exceptions, outputs) on small Falco-syntax rule files.

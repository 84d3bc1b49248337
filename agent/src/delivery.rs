//! stub in lead snapshot

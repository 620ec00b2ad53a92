//! What people see: the lifecycle diagrams drawn as SVG (for the operator page and for
//! `reelstate states --svg`), and the escaping every HTML or SVG text goes through.
//! Pure string building, no IO: the HTTP side (`http::ui`) decides what to render.

pub mod diagram;
pub mod escape;

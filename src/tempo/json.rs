//! JSON encoding of tempopb messages as Tempo writes them.

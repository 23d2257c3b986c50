//! Collects every error found in one attribute so the user sees all their mistakes in one
//! compile (as serde_derive does), instead of fixing them one rebuild at a time. A context
//! dropped holding errors nobody took with [`Ctxt::check`] would lose them silently: it panics
//! instead, so the bug shows in the first test that reaches it.

use std::fmt::Display;

use proc_macro2::Span;

#[derive(Default)]
pub struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    pub fn new() -> Self {
        Ctxt::default()
    }

    pub fn error_spanned_by<T: quote::ToTokens>(&mut self, tokens: T, message: impl Display) {
        self.errors.push(syn::Error::new_spanned(tokens, message));
    }

    pub fn error_at(&mut self, span: Span, message: impl Display) {
        self.errors.push(syn::Error::new(span, message));
    }

    pub fn syn_error(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// All errors combined into one, or `Ok` when there were none.
    pub fn check(mut self) -> Result<(), syn::Error> {
        let mut errors = std::mem::take(&mut self.errors).into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for error in errors {
            combined.combine(error);
        }
        Err(combined)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !self.errors.is_empty() && !std::thread::panicking() {
            let messages: Vec<String> = self.errors.iter().map(|e| e.to_string()).collect();
            panic!(
                "zmig: a Ctxt was dropped with errors never reported (call `check`): {}",
                messages.join("; ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ctxt;
    use proc_macro2::Span;

    #[test]
    fn checked_errors_are_combined_and_an_empty_context_drops_quietly() {
        let mut cx = Ctxt::new();
        cx.error_at(Span::call_site(), "first");
        cx.error_at(Span::call_site(), "second");
        let combined = cx.check().unwrap_err();
        let messages: Vec<String> = combined.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages, ["first", "second"]);
        drop(Ctxt::new());
    }

    #[test]
    #[should_panic(expected = "a Ctxt was dropped with errors never reported (call `check`): lost")]
    fn a_context_dropped_with_errors_panics() {
        let mut cx = Ctxt::new();
        cx.error_at(Span::call_site(), "lost");
    }
}

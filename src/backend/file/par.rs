//! Running one function over many items on every core: start-up time is mostly per-room work
//! (reading, parsing, checking files), and so is reading `.cache`.

/// `f` over `items` on every core (at most 8 threads), in order, keeping the `Some`s. Start-up
/// time is mostly per-room work like this.
pub(super) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Option<R> + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|items| scope.spawn(move || items.iter().filter_map(f).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

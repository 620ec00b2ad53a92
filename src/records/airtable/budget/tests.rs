use super::*;

/// Queues `waiters` on `budget` one after the other (each `gap` after the one before,
/// so their arrival order is fixed) while `held` holds every slot, then lets `held`
/// go; answers the labels in the order their slots were granted. Each grantee gives
/// its slot back at once.
async fn grant_order(
    budget: Arc<LocalBudget>,
    held: Vec<Slot>,
    waiters: &[(&'static str, Priority)],
    gap: Duration,
) -> Vec<&'static str> {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (label, priority) in waiters.iter().copied() {
        let (budget, order) = (budget.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let slot = budget.acquire_for(priority).await;
            order.lock().unwrap().push(label);
            drop(slot);
        }));
        tokio::time::sleep(gap).await;
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    order.lock().unwrap().clone()
}

#[tokio::test]
async fn a_read_is_granted_before_the_writes_queued_ahead_of_it() {
    let budget = Arc::new(LocalBudget::with_window(1, Duration::from_millis(30)));
    let held = vec![budget.acquire_for(Priority::Write).await];
    let order = grant_order(
        budget,
        held,
        &[
            ("write 1", Priority::Write),
            ("write 2", Priority::Write),
            ("read", Priority::Read),
            ("write 3", Priority::Write),
        ],
        Duration::from_millis(5),
    )
    .await;
    assert_eq!(order, ["read", "write 1", "write 2", "write 3"]);
}

#[tokio::test]
async fn a_write_that_waited_its_patience_goes_before_the_reads() {
    let window = Duration::from_millis(20);
    let patience = Duration::from_millis(300);
    let budget = Arc::new(LocalBudget::with_patience(1, window, patience));
    let held = vec![budget.acquire_for(Priority::Write).await];
    let mut waiters = vec![("write", Priority::Write)];
    waiters.extend(std::iter::repeat_n(("read", Priority::Read), 40));
    let order = grant_order(budget, held, &waiters, Duration::ZERO).await;
    // The reads went first until the write had waited 300 ms: some of them, not all
    // forty (reads alone take 800 ms: one every 20 ms).
    let at = order.iter().position(|l| *l == "write").unwrap();
    assert!(at > 0 && at < 30, "the write was granted {at}th: {order:?}");
}

#[tokio::test]
async fn a_budget_never_grants_more_slots_than_it_has_whatever_the_order() {
    let window = Duration::from_millis(50);
    let budget = Arc::new(LocalBudget::with_window(2, window));
    let granted = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (budget, granted) = (budget.clone(), granted.clone());
            let priority = if i % 3 == 0 {
                Priority::Read
            } else {
                Priority::Write
            };
            tokio::spawn(async move {
                let slot = budget.acquire_for(priority).await;
                granted.lock().unwrap().push(Instant::now());
                drop(slot);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut at = granted.lock().unwrap().clone();
    at.sort();
    // Two slots, each busy one window after its release: any three grants span a
    // window at least.
    for w in at.windows(3) {
        assert!(
            w[2] - w[0] >= window,
            "three grants within {:?}",
            w[2] - w[0]
        );
    }
}

#[tokio::test]
async fn a_waiter_that_gives_up_leaves_no_slot_behind() {
    let window = Duration::from_millis(20);
    let budget = Arc::new(LocalBudget::with_window(1, window));
    let held = budget.acquire_for(Priority::Write).await;
    // A read queues, is handed the slot while nobody polls it, and is dropped.
    let mut gave_up = budget.acquire_for(Priority::Read);
    assert!(futures::poll!(&mut gave_up).is_pending());
    drop(held);
    tokio::time::sleep(window * 3).await;
    drop(gave_up);
    let again = tokio::time::timeout(window, budget.acquire_for(Priority::Write)).await;
    assert!(
        again.is_ok(),
        "the slot handed to a waiter that gave up was lost"
    );
}

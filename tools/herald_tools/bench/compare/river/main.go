// Command bench-river runs the steps of Herald's queue benchmark on River
// (github.com/riverqueue/river, driver riverpgxv5) through River's public API only, one
// step per invocation. It prints raw measurements as JSON on stdout; the arithmetic
// (medians, drain rates, latency quantiles) and the phase resets are bench_river.py's,
// in Python, shared with the other harnesses (common.py). See ../README.md.
//
//	bench-river migrate URL
//	bench-river insert-many URL -total N [-batch 5000] [-fast]
//	bench-river insert-single URL -total N [-producers 10]
//	bench-river drain URL -total N -workers W [-clients C] [-fetch-cooldown D]
//	bench-river latency URL -rate R -seconds S -workers W [-fetch-cooldown D]
//
// The payload (-payload, JSON text) is inserted as the job's args, as is.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// Kind is the job kind every step inserts and works.
const Kind = "bench"

// Args carries the payload's JSON text as the job's args, unchanged.
type Args struct{ raw json.RawMessage }

func (Args) Kind() string { return Kind }

func (a Args) MarshalJSON() ([]byte, error) { return a.raw, nil }

func (a *Args) UnmarshalJSON(data []byte) error {
	a.raw = append(a.raw[:0], data...)
	return nil
}

// NoopWorker completes every job at once (the drain's no-op handler).
type NoopWorker struct {
	river.WorkerDefaults[Args]
}

func (w *NoopWorker) Work(ctx context.Context, job *river.Job[Args]) error { return nil }

// LatencyWorker records now - t0 (ms) as the job starts; t0 is in the args.
type LatencyWorker struct {
	river.WorkerDefaults[Args]
	mu      sync.Mutex
	samples []float64
	seen    chan struct{}
}

func (w *LatencyWorker) Work(ctx context.Context, job *river.Job[Args]) error {
	now := time.Now().UnixNano()
	var body struct {
		T0 int64 `json:"t0"`
	}
	if err := json.Unmarshal(job.Args.raw, &body); err != nil {
		return err
	}
	w.mu.Lock()
	w.samples = append(w.samples, float64(now-body.T0)/1e6)
	w.mu.Unlock()
	w.seen <- struct{}{}
	return nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "bench-river: %v\n", err)
	os.Exit(1)
}

func emit(v any) {
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(v); err != nil {
		fail(err)
	}
}

// openPool is Herald's bench pool: 2 to 16 connections.
func openPool(ctx context.Context, url string) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		fail(err)
	}
	cfg.MinConns, cfg.MaxConns = 2, 16
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		fail(err)
	}
	if err := pool.Ping(ctx); err != nil {
		fail(err)
	}
	return pool
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// insertClient is a client that only inserts (no queues: it works nothing). Its
// FetchCooldown also spaces the NOTIFY its inserts send, per queue (River's insert
// notify limiter), so the latency producer's must match its consumer's.
func insertClient(pool *pgxpool.Pool, cooldown time.Duration) *river.Client[pgx.Tx] {
	workers := river.NewWorkers()
	river.AddWorker(workers, &NoopWorker{})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		FetchCooldown: cooldown, Logger: quietLogger(), Workers: workers,
	})
	if err != nil {
		fail(err)
	}
	return client
}

func manyParams(payload json.RawMessage, n int) []river.InsertManyParams {
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: Args{raw: payload}}
	}
	return params
}

// riverVersion is the version of github.com/riverqueue/river this program was built with.
func riverVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/riverqueue/river" {
				return strings.TrimPrefix(dep.Version, "v")
			}
		}
	}
	return "unknown"
}

func migrate(ctx context.Context, url string) {
	pool := openPool(ctx, url)
	defer pool.Close()
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: quietLogger()})
	if err != nil {
		fail(err)
	}
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		fail(err)
	}
	versions := make([]int, len(res.Versions))
	for i, v := range res.Versions {
		versions[i] = v.Version
	}
	emit(map[string]any{"migrated": versions, "river": riverVersion(), "go": runtime.Version()})
}

// insertMany: total jobs in calls of batch (InsertMany, or InsertManyFast with -fast);
// the parameters are built before the clock starts, as the Python harnesses do.
func insertMany(ctx context.Context, url string, payload json.RawMessage, total, batch int, fast bool) {
	pool := openPool(ctx, url)
	defer pool.Close()
	client := insertClient(pool, river.FetchCooldownDefault)
	work := make([][]river.InsertManyParams, total/batch)
	for i := range work {
		work[i] = manyParams(payload, batch)
	}
	started := time.Now()
	for _, params := range work {
		var err error
		if fast {
			_, err = client.InsertManyFast(ctx, params)
		} else {
			_, err = client.InsertMany(ctx, params)
		}
		if err != nil {
			fail(err)
		}
	}
	emit(map[string]any{"jobs": len(work) * batch, "seconds": time.Since(started).Seconds()})
}

// insertSingle: producers goroutines, each inserting total/producers jobs one at a time.
func insertSingle(ctx context.Context, url string, payload json.RawMessage, total, producers int) {
	pool := openPool(ctx, url)
	defer pool.Close()
	client := insertClient(pool, river.FetchCooldownDefault)
	per := total / producers
	errs := make(chan error, producers)
	var wg sync.WaitGroup
	started := time.Now()
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				if _, err := client.Insert(ctx, Args{raw: payload}, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(started).Seconds()
	close(errs)
	if err := <-errs; err != nil {
		fail(err)
	}
	emit(map[string]any{"jobs": per * producers, "seconds": elapsed})
}

// workClient is a client working the default queue with maxWorkers, on its own pool.
func workClient(ctx context.Context, url string, workers *river.Workers, maxWorkers int, cooldown time.Duration) (*river.Client[pgx.Tx], *pgxpool.Pool) {
	pool := openPool(ctx, url)
	poll := max(cooldown, river.FetchPollIntervalDefault)
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		FetchCooldown:     cooldown,
		FetchPollInterval: poll,
		Logger:            quietLogger(),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: maxWorkers}},
		Workers:           workers,
	})
	if err != nil {
		fail(err)
	}
	return client, pool
}

// drain: clients work the filled queue with a no-op worker. A completion is what River
// reports done once its completer's UPDATE has returned (EventKindJobCompleted, which
// River sends after that statement). The events of one completer statement are handed
// over together; a completion here is a burst of events with less than burstGap between
// two, stamped with its first event's time. Prints the completions as [seconds, jobs].
func drain(ctx context.Context, url string, total, maxWorkers, clients int, cooldown time.Duration) {
	const burstGap = 200 * time.Microsecond
	workers := river.NewWorkers()
	river.AddWorker(workers, &NoopWorker{})
	events := make(chan *river.Event, 4096)
	type sub struct {
		ch     <-chan *river.Event
		cancel func()
	}
	var subs []sub
	var all []*river.Client[pgx.Tx]
	var pools []*pgxpool.Pool
	for range clients {
		client, pool := workClient(ctx, url, workers, maxWorkers, cooldown)
		ch, cancel := client.SubscribeConfig(&river.SubscribeConfig{
			ChanSize: total + 1000, Kinds: []river.EventKind{river.EventKindJobCompleted},
		})
		subs = append(subs, sub{ch, cancel})
		all, pools = append(all, client), append(pools, pool)
	}
	for _, s := range subs { // one stream, in arrival order
		go func() {
			for e := range s.ch {
				events <- e
			}
		}()
	}
	base := time.Now()
	for _, client := range all {
		if err := client.Start(ctx); err != nil {
			fail(err)
		}
	}
	var completions [][2]float64
	done := 0
	timeout := time.After(30 * time.Minute)
	for done < total {
		select {
		case <-events:
		case <-timeout:
			fail(fmt.Errorf("drain: %d of %d jobs completed", done, total))
		}
		at := time.Since(base).Seconds()
		n := 1
		timer := time.NewTimer(burstGap)
	burst:
		for {
			select {
			case <-events:
				n++
				timer.Reset(burstGap)
			case <-timer.C:
				break burst
			}
		}
		done += n
		completions = append(completions, [2]float64{at, float64(n)})
	}
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, client := range all {
		if err := client.Stop(stopCtx); err != nil && !errors.Is(err, context.Canceled) {
			fail(err)
		}
	}
	for _, s := range subs {
		s.cancel()
	}
	for _, pool := range pools {
		pool.Close()
	}
	emit(map[string]any{"jobs": done, "completions": completions})
}

// latency: starts this program as the consumer (latencyConsumer) in another process,
// waits for its "ready", inserts single jobs at rate for seconds with t0 (wall clock ns,
// shared by both processes) taken just before each Insert, then sends the count and
// prints the consumer's samples (ms), as common.latency_producer does.
func latency(ctx context.Context, url string, rate, seconds float64, maxWorkers int, cooldown time.Duration) {
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	cmd := exec.Command(self, "latency-consumer",
		"-workers", strconv.Itoa(maxWorkers), "-fetch-cooldown", cooldown.String(), url)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		fail(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fail(err)
	}
	if err := cmd.Start(); err != nil {
		fail(err)
	}
	reader := bufio.NewReader(stdout)
	ready, err := reader.ReadString('\n')
	if err != nil || strings.TrimSpace(ready) != "ready" {
		fail(fmt.Errorf("latency consumer did not start: %q %v", ready, err))
	}
	pool := openPool(ctx, url)
	defer pool.Close()
	client := insertClient(pool, cooldown)
	count := int(rate * seconds)
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := range count {
		if delay := time.Until(start.Add(time.Duration(i) * interval)); delay > 0 {
			time.Sleep(delay)
		}
		t0 := time.Now().UnixNano()
		payload := fmt.Appendf(nil, `{"t0":%d,"i":%d}`, t0, i)
		if _, err := client.Insert(ctx, Args{raw: payload}, nil); err != nil {
			fail(err)
		}
	}
	if _, err := fmt.Fprintf(stdin, "%d\n", count); err != nil {
		fail(err)
	}
	out, err := io.ReadAll(reader)
	if err != nil {
		fail(err)
	}
	if err := cmd.Wait(); err != nil {
		fail(fmt.Errorf("latency consumer: %w", err))
	}
	os.Stdout.Write(out)
}

func latencyConsumer(ctx context.Context, url string, maxWorkers int, cooldown time.Duration) {
	worker := &LatencyWorker{seen: make(chan struct{}, 1<<16)}
	workers := river.NewWorkers()
	river.AddWorker(workers, worker)
	client, pool := workClient(ctx, url, workers, maxWorkers, cooldown)
	defer pool.Close()
	if err := client.Start(ctx); err != nil {
		fail(err)
	}
	// Start returns once the client's services have started; a short wait more lets its
	// notifier's LISTEN and the producer's first fetch settle before the first insert.
	time.Sleep(500 * time.Millisecond)
	fmt.Println("ready")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		fail(err)
	}
	expected, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		fail(err)
	}
	timeout := time.After(60 * time.Second)
	for seen := 0; seen < expected; seen++ {
		select {
		case <-worker.seen:
		case <-timeout:
			fail(fmt.Errorf("latency consumer saw %d of %d jobs", seen, expected))
		}
	}
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := client.Stop(stopCtx); err != nil {
		fail(err)
	}
	worker.mu.Lock()
	defer worker.mu.Unlock()
	emit(worker.samples)
}

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: bench-river migrate|insert-many|insert-single|drain|latency [flags] URL"))
	}
	step := os.Args[1]
	flags := flag.NewFlagSet(step, flag.ExitOnError)
	payloadText := flags.String("payload", `{}`, "the job's args, JSON")
	total := flags.Int("total", 0, "jobs")
	batch := flags.Int("batch", 5000, "jobs per InsertMany call")
	fast := flags.Bool("fast", false, "InsertManyFast instead of InsertMany")
	producers := flags.Int("producers", 10, "concurrent single-insert producers")
	maxWorkers := flags.Int("workers", 1, "MaxWorkers of the default queue, per client")
	clients := flags.Int("clients", 1, "clients working the queue")
	cooldown := flags.Duration("fetch-cooldown", river.FetchCooldownDefault, "Config.FetchCooldown")
	rate := flags.Float64("rate", 200, "latency: jobs per second")
	seconds := flags.Float64("seconds", 15, "latency: for how long")
	if err := flags.Parse(os.Args[2:]); err != nil {
		fail(err)
	}
	if flags.NArg() != 1 {
		fail(errors.New("one database URL expected after the flags"))
	}
	url := flags.Arg(0)
	payload := json.RawMessage(*payloadText)
	if !json.Valid(payload) {
		fail(errors.New("-payload is not JSON"))
	}
	ctx := context.Background()
	switch step {
	case "migrate":
		migrate(ctx, url)
	case "insert-many":
		insertMany(ctx, url, payload, *total, *batch, *fast)
	case "insert-single":
		insertSingle(ctx, url, payload, *total, *producers)
	case "drain":
		drain(ctx, url, *total, *maxWorkers, *clients, *cooldown)
	case "latency":
		latency(ctx, url, *rate, *seconds, *maxWorkers, *cooldown)
	case "latency-consumer":
		latencyConsumer(ctx, url, *maxWorkers, *cooldown)
	default:
		fail(fmt.Errorf("unknown step %q", step))
	}
}

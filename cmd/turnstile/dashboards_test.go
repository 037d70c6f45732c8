package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
)

const (
	dashboardFile = "../../deploy/grafana/turnstile.json"
	alertsFile    = "../../deploy/prometheus/alerts.yml"
)

// grafanaDashboard is the part of a Grafana dashboard model the tests read.
type grafanaDashboard struct {
	UID           string         `json:"uid"`
	Title         string         `json:"title"`
	SchemaVersion int            `json:"schemaVersion"`
	Inputs        []any          `json:"__inputs"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []grafanaVariable `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	GridPos     *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource *grafanaDatasource `json:"datasource"`
	Targets    []struct {
		RefID      string             `json:"refId"`
		Expr       string             `json:"expr"`
		Datasource *grafanaDatasource `json:"datasource"`
	} `json:"targets"`
	// Panels are a collapsed row's.
	Panels []grafanaPanel `json:"panels"`
}

type grafanaDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaVariable struct {
	Name       string             `json:"name"`
	Type       string             `json:"type"`
	Datasource *grafanaDatasource `json:"datasource"`
	// Query is a string, or for Prometheus query variables an object
	// whose query field holds it.
	Query json.RawMessage `json:"query"`
}

// query returns the variable's query text.
func (v grafanaVariable) query(t *testing.T) string {
	t.Helper()
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	require.NoError(t, json.Unmarshal(v.Query, &o), "variable %s: query", v.Name)
	return o.Query
}

// grafanaBuiltins are the variables Grafana defines itself.
var grafanaBuiltins = []string{
	"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
	"__from", "__to", "__dashboard", "__org", "__user",
}

// dashboardQuery is one PromQL expression of the dashboard or the rules,
// with where it is, for messages.
type dashboardQuery struct {
	where, expr string
}

func loadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var d grafanaDashboard
	require.NoError(t, json.Unmarshal(b, &d), dashboardFile)
	return d
}

// panels returns every panel, a collapsed row's included.
func (d grafanaDashboard) panels() []grafanaPanel {
	var all []grafanaPanel
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return all
}

// vars returns the names the dashboard's expressions may use as $name.
func (d grafanaDashboard) vars() map[string]bool {
	vars := set(grafanaBuiltins...)
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	return vars
}

// labelValues reads Grafana's label_values(metric{...}, label).
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*(\w+)\s*\)\s*$`)

// queries returns the PromQL of every panel target and query variable.
// A variable's label_values(selector, label) becomes the PromQL that
// needs the same: group by (label) (selector).
func (d grafanaDashboard) queries(t *testing.T) []dashboardQuery {
	t.Helper()
	var qs []dashboardQuery
	for _, p := range d.panels() {
		for _, tg := range p.Targets {
			qs = append(qs, dashboardQuery{fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.query(t)
		m := labelValues.FindStringSubmatch(q)
		require.NotNil(t, m, "variable %s: only label_values(selector, label) is checked, not %q", v.Name, q)
		qs = append(qs, dashboardQuery{fmt.Sprintf("variable %s", v.Name), fmt.Sprintf("group by (%s) (%s)", m[2], m[1])})
	}
	return qs
}

// alertRules is a Prometheus rule file, read strictly: a misspelt field
// fails the test as it fails promtool.
type alertRules struct {
	Groups []struct {
		Name     string      `yaml:"name"`
		Interval string      `yaml:"interval"`
		Rules    []alertRule `yaml:"rules"`
	} `yaml:"groups"`
}

type alertRule struct {
	Alert         string            `yaml:"alert"`
	Record        string            `yaml:"record"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for"`
	KeepFiringFor string            `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`
}

func loadAlerts(t *testing.T) alertRules {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	require.NoError(t, err)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var r alertRules
	require.NoError(t, dec.Decode(&r), alertsFile)
	return r
}

func (r alertRules) rules() []alertRule {
	var all []alertRule
	for _, g := range r.Groups {
		all = append(all, g.Rules...)
	}
	return all
}

func (r alertRules) queries() []dashboardQuery {
	var qs []dashboardQuery
	for _, rule := range r.rules() {
		qs = append(qs, dashboardQuery{"alert " + rule.Alert, rule.Expr})
	}
	return qs
}

// promDuration is Prometheus's duration syntax: 90s, 1h30m, 2d.
var promDuration = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)

// The dashboard imports and provisions as it is: valid JSON, panels with
// ids, places and targets, every query on the datasource variable, and
// every $variable defined.
func TestDashboard_IsImportable(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	require.NotEmpty(t, d.UID)
	require.NotEmpty(t, d.Title)
	require.GreaterOrEqual(t, d.SchemaVersion, 36, "a schema Grafana 10 and later reads without migrating")
	// ${DS_...} inputs are filled in by the import dialog only; a
	// provisioned dashboard would query a datasource named "${DS_...}".
	require.Empty(t, d.Inputs, "use the datasource variable, not __inputs")

	vars := map[string]grafanaVariable{}
	for _, v := range d.Templating.List {
		require.NotContains(t, vars, v.Name, "variable %s twice", v.Name)
		vars[v.Name] = v
	}
	require.Contains(t, vars, "datasource")
	require.Equal(t, "datasource", vars["datasource"].Type)
	require.Equal(t, "prometheus", vars["datasource"].query(t))
	onDatasource := func(ds *grafanaDatasource, where string) {
		require.NotNil(t, ds, "%s has no datasource", where)
		require.Equal(t, grafanaDatasource{Type: "prometheus", UID: "${datasource}"}, *ds, where)
	}
	for _, name := range []string{"job", "instance"} {
		require.Contains(t, vars, name)
		require.Equal(t, "query", vars[name].Type)
		onDatasource(vars[name].Datasource, "variable "+name)
	}

	ids := map[int]bool{}
	timeseries := 0
	for _, p := range d.panels() {
		require.NotEmpty(t, p.Title, "panel %d", p.ID)
		require.NotZero(t, p.ID, "panel %q", p.Title)
		require.False(t, ids[p.ID], "panel id %d twice", p.ID)
		ids[p.ID] = true
		require.NotNil(t, p.GridPos, "panel %q", p.Title)
		require.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, "panel %q is wider than the grid", p.Title)
		if p.Type == "row" {
			require.Empty(t, p.Targets, "row %q", p.Title)
			continue
		}
		timeseries++
		require.NotEmpty(t, p.Description, "panel %q: say what it shows and what to do about it", p.Title)
		onDatasource(p.Datasource, fmt.Sprintf("panel %q", p.Title))
		require.NotEmpty(t, p.Targets, "panel %q", p.Title)
		refIDs := map[string]bool{}
		for _, tg := range p.Targets {
			require.NotEmpty(t, tg.RefID, "panel %q", p.Title)
			require.False(t, refIDs[tg.RefID], "panel %q: refId %s twice", p.Title, tg.RefID)
			refIDs[tg.RefID] = true
			onDatasource(tg.Datasource, fmt.Sprintf("panel %q target %s", p.Title, tg.RefID))
		}
	}
	require.Positive(t, timeseries)

	for _, q := range d.queries(t) {
		refs, err := parsePromQL(q.expr)
		require.NoError(t, err, q.where)
		for _, v := range refs.Vars {
			require.True(t, d.vars()[v], "%s: $%s is not a variable of the dashboard", q.where, v)
		}
		// Every selector follows the job and instance pickers; the
		// variables' own queries follow those defined before them.
		if strings.HasPrefix(q.where, "variable ") {
			continue
		}
		for _, s := range refs.Selectors {
			require.Contains(t, s.Matchers, promqlMatcher{"job", "=~", "$job"}, "%s: %s", q.where, s.Metric)
			require.Contains(t, s.Matchers, promqlMatcher{"instance", "=~", "$instance"}, "%s: %s", q.where, s.Metric)
		}
	}
}

// The rule file loads as Prometheus reads it, and each alert says what
// happened, why it matters and what to do, with templates that render.
func TestAlerts_AreLoadable(t *testing.T) {
	t.Parallel()
	r := loadAlerts(t)
	require.NotEmpty(t, r.Groups)
	names := map[string]bool{}
	groups := map[string]bool{}
	for _, g := range r.Groups {
		require.NotEmpty(t, g.Name)
		require.False(t, groups[g.Name], "group %s twice", g.Name)
		groups[g.Name] = true
		require.NotEmpty(t, g.Rules, "group %s", g.Name)
	}
	for _, rule := range r.rules() {
		require.Regexp(t, `^Turnstile[A-Z][A-Za-z]+$`, rule.Alert, "an alert rule, named like Prometheus's own")
		require.Empty(t, rule.Record, rule.Alert)
		require.False(t, names[rule.Alert], "alert %s twice", rule.Alert)
		names[rule.Alert] = true
		require.Regexp(t, promDuration, rule.For, "%s: for", rule.Alert)
		require.Contains(t, []string{"warning", "critical"}, rule.Labels["severity"], "%s: severity", rule.Alert)
		require.NotEmpty(t, rule.Annotations["summary"], rule.Alert)
		require.GreaterOrEqual(t, len(strings.Fields(rule.Annotations["description"])), 20,
			"%s: the description says why it fired and what to do", rule.Alert)

		refs, err := parsePromQL(rule.Expr)
		require.NoError(t, err, rule.Alert)
		require.Empty(t, refs.Vars, "%s: Grafana variables mean nothing to Prometheus", rule.Alert)
		// $labels.x must be a label the alert's series keep: those of
		// the first by clause (the left side's, which and, unless and a
		// comparison keep), or with no aggregation the target labels.
		keep := slices.Clone(targetLabels)
		for _, c := range refs.Clauses {
			if c.Keyword == "by" {
				keep = c.Labels
				break
			}
		}
		data := struct {
			Labels map[string]string
			Value  float64
		}{Labels: map[string]string{}, Value: 3}
		for _, l := range keep {
			data.Labels[l] = "the-" + l
		}
		funcs := template.FuncMap{
			"humanize":         func(v float64) string { return fmt.Sprint(v) },
			"humanizeDuration": func(v float64) string { return time.Duration(v * float64(time.Second)).String() },
		}
		for name, text := range rule.Annotations {
			for _, m := range regexp.MustCompile(`\$labels\.(\w+)`).FindAllStringSubmatch(text, -1) {
				require.Contains(t, keep, m[1], "%s: annotation %s uses $labels.%s, which the expression drops", rule.Alert, name, m[1])
			}
			// Prometheus's own preamble, then the annotation.
			tmpl, err := template.New(name).Funcs(funcs).Option("missingkey=error").
				Parse("{{$labels := .Labels}}{{$value := .Value}}" + text)
			require.NoError(t, err, "%s: annotation %s", rule.Alert, name)
			var out strings.Builder
			require.NoError(t, tmpl.Execute(&out, data), "%s: annotation %s", rule.Alert, name)
			require.NotContains(t, out.String(), "<no value>", "%s: annotation %s", rule.Alert, name)
		}
	}
}

// What issue 16 asks the dashboard and the alerts to show, by the metric
// (and label) that shows it.
func TestDashboardAndAlerts_CoverTheIssue(t *testing.T) {
	t.Parallel()
	type want struct {
		what, metric, by, matcher string // by: a by-label; matcher: label=value
	}
	check := func(t *testing.T, qs []dashboardQuery, w want) {
		t.Helper()
		for _, q := range qs {
			refs, err := parsePromQL(q.expr)
			require.NoError(t, err, q.where)
			if !slices.Contains(refs.Metrics(), w.metric) {
				continue
			}
			byOK := w.by == "" || slices.ContainsFunc(refs.Clauses, func(c promqlClause) bool {
				return c.Keyword == "by" && slices.Contains(c.Labels, w.by) && slices.Contains(c.Metrics, w.metric)
			})
			matchOK := w.matcher == "" || slices.ContainsFunc(refs.Selectors, func(s promqlSelector) bool {
				l, v, _ := strings.Cut(w.matcher, "=")
				return s.Metric == w.metric && slices.Contains(s.Matchers, promqlMatcher{l, "=", v})
			})
			if byOK && matchOK {
				return
			}
		}
		t.Errorf("nothing shows %s (%s by %q where %q)", w.what, w.metric, w.by, w.matcher)
	}
	t.Run("Dashboard", func(t *testing.T) {
		t.Parallel()
		qs := loadDashboard(t).queries(t)
		for _, w := range []want{
			{"lock wait p50/p99 by resource kind", "turnstile_lock_wait_duration_seconds_bucket", "turnstile_lock_kind", ""},
			{"contended rate", "turnstile_lock_contended_total", "turnstile_lock_kind", ""},
			{"busy retries", "turnstile_task_busy_retries_total", "", ""},
			{"lost leases", "turnstile_lock_losses_total", "", ""},
			{"releases after expiry", "turnstile_lock_releases_total", "", "turnstile_outcome=not_held"},
			{"locks held", "turnstile_lock_held", "", ""},
			{"waiters", "turnstile_lock_waiters", "", ""},
			{"queue size", "asynq_queue_size", "queue", ""},
			{"queue latency", "asynq_queue_latency_seconds", "queue", ""},
			{"processed by queue", "asynq_tasks_processed_total", "queue", ""},
			{"failed by queue", "asynq_tasks_failed_total", "queue", ""},
			{"task process duration by type", "messaging_process_duration_seconds_bucket", "turnstile_task_type", ""},
		} {
			check(t, qs, w)
		}
		var quantiles []string
		for _, q := range qs {
			if strings.Contains(q.expr, "turnstile_lock_wait_duration_seconds_bucket") {
				quantiles = append(quantiles, regexp.MustCompile(`histogram_quantile\(([0-9.]+)`).FindStringSubmatch(q.expr)[1])
			}
		}
		require.Subset(t, quantiles, []string{"0.5", "0.99"}, "lock wait p50 and p99")
	})
	t.Run("Alerts", func(t *testing.T) {
		t.Parallel()
		qs := loadAlerts(t).queries()
		for _, w := range []want{
			{"leases lost", "turnstile_lock_losses_total", "", ""},
			{"releases after expiry (TTL too tight)", "turnstile_lock_releases_total", "", "turnstile_outcome=not_held"},
			{"queue latency", "asynq_queue_latency_seconds", "queue", ""},
			{"archive rate", "asynq_tasks_enqueued_total", "queue", "state=archived"},
			{"no worker processing", "asynq_tasks_processed_total", "queue", ""},
		} {
			check(t, qs, w)
		}
	})
}

// A real worker process, after a contended run on a real redis-server,
// exports every metric and label the dashboard and the alert rules name:
// a renamed metric or label on either side fails here, not on an
// operator's empty panel or silent alert. The run makes every series the
// files use exist: lock waits and contention on one order, busy retries
// (the test holds the order's lock past the wait budget), and a lease
// lost while its handler waits for inventory (the test deletes the lock,
// as a Redis failover that lost it would), whose release then finds the
// lock gone.
func TestDashboardAndAlerts_NameWhatAWorkerExports(t *testing.T) {
	t.Parallel()
	d, rules := loadDashboard(t), loadAlerts(t)

	srv := redistest.Server(t)
	rdb := srv.Client(t)
	store := ledger.New(rdb, "")
	ctx := t.Context()
	require.NoError(t, store.AddTicketType(ctx, ledger.TicketType{ID: "gold", Capacity: 10, Price: 2500, Currency: "EUR"}))
	client := asynq.NewClientFromRedisClient(rdb)
	shop := &jobs.Service{Store: store, Client: client}
	hot, err := shop.Reserve(ctx, "o-hot", []ledger.Item{{TicketType: "gold", Quantity: 2}})
	require.NoError(t, err)
	_, err = shop.Reserve(ctx, "o-lost", []ledger.Item{{TicketType: "gold", Quantity: 2}})
	require.NoError(t, err)

	addr := freeAddr(t)
	worker, logs := startTurnstile(t, []string{
		"TURNSTILE_REDIS_URL=redis://" + srv.Addr(), "TURNSTILE_POLL_INTERVAL=10ms",
		"TURNSTILE_ADMIN_ADDR=" + addr, "TURNSTILE_CONCURRENCY=4",
		// Short, so that a confirm finding the order held gives up and
		// is parked: a busy retry.
		"TURNSTILE_LOCK_WAIT=100ms",
		"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none",
	}, "worker")
	base := "http://" + addr
	require.Eventually(t, func() bool {
		code, _ := httpDo(t, http.MethodGet, base+"/readyz", "", "")
		return code == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "the worker did not get ready; its log:\n%s", logs)
	// scrape reads the worker's /metrics; it runs inside Eventually too,
	// off the test's goroutine, so it returns its error.
	scrape := func() (exposition, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
		}
		return parseExposition(resp.Body)
	}
	// exports reports whether the worker exports metric with label=value.
	exports := func(metric, label, value string) func() bool {
		return func() bool {
			exp, err := scrape()
			return err == nil && exp[metric][label][value]
		}
	}
	locker, err := lock.New(rdb, lock.Config{TTL: 2 * time.Second, Refresh: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, locker.Close()) })

	// Contention: six webhooks for one order while the test holds it.
	held, err := locker.Acquire(ctx, lock.Key("order", "o-hot"))
	require.NoError(t, err)
	for i := range 6 {
		task, err := jobs.NewTask(ctx, jobs.ConfirmArgs{OrderID: "o-hot", WebhookID: fmt.Sprintf("wh-hot-%d", i), Amount: hot.Amount, Currency: hot.Currency})
		require.NoError(t, err)
		_, err = client.EnqueueContext(ctx, task)
		require.NoError(t, err)
	}
	require.Eventually(t, exports("turnstile_task_busy_retries_total", "turnstile_lock_kind", "order"), 30*time.Second, 50*time.Millisecond, "no busy retry while the test held the order; the worker's log:\n%s", logs)
	require.NoError(t, held.Release(ctx))
	inspect := asynq.NewInspectorFromRedisClient(rdb)
	require.Eventually(t, func() bool {
		o, err := store.Order(ctx, "o-hot")
		if err != nil {
			return false
		}
		q, err := inspect.GetQueueInfo("critical")
		return err == nil && o.State == ledger.StatePaid && q.Pending+q.Active+q.Scheduled+q.Retry == 0
	}, 60*time.Second, 50*time.Millisecond, "the confirms did not all run; the worker's log:\n%s", logs)

	// A lost lease: a revoke holds the order and waits for the inventory,
	// which the test holds; the order's lock disappears meanwhile.
	inventory, err := locker.Acquire(ctx, lock.Key("ticket_type", "gold", "inventory"))
	require.NoError(t, err)
	task, err := jobs.NewTask(ctx, jobs.RevokeArgs{OrderID: "o-lost"}, asynq.TaskID("revoke-now:o-lost"))
	require.NoError(t, err)
	_, err = client.EnqueueContext(ctx, task)
	require.NoError(t, err)
	orderLock := lock.DefaultPrefix + "{" + lock.Key("order", "o-lost").String() + "}"
	require.Eventually(t, func() bool {
		n, err := rdb.Exists(ctx, orderLock).Result()
		return err == nil && n == 1
	}, 30*time.Second, 5*time.Millisecond, "the revoke never took the order; the worker's log:\n%s", logs)
	require.NoError(t, rdb.Del(ctx, orderLock).Err())
	require.Eventually(t, func() bool {
		return exports("turnstile_lock_losses_total", "turnstile_task_type", jobs.KindRevoke)() &&
			exports("turnstile_lock_releases_total", "turnstile_outcome", "not_held")()
	}, 30*time.Second, 50*time.Millisecond, "the worker did not lose the lease, or did not count it; its log:\n%s", logs)
	require.NoError(t, inventory.Release(ctx))

	exp, err := scrape()
	require.NoError(t, err)
	var problems []string
	for _, q := range d.queries(t) {
		for _, p := range checkPromQL(q.expr, exp, d.vars()) {
			problems = append(problems, fmt.Sprintf("%s: %s\n\t%s", dashboardFile, q.where, p))
		}
	}
	for _, q := range rules.queries() {
		for _, p := range checkPromQL(q.expr, exp, nil) {
			problems = append(problems, fmt.Sprintf("%s: %s\n\t%s", alertsFile, q.where, p))
		}
	}
	if len(problems) > 0 {
		t.Fatalf("names the worker does not export:\n%s\n\nit exports:\n%s",
			strings.Join(problems, "\n"), strings.Join(slices.Sorted(maps.Keys(exp)), "\n"))
	}

	require.NoError(t, worker.Process.Signal(syscall.SIGTERM))
	require.NoError(t, worker.Wait(), "the worker did not stop cleanly; its log:\n%s", logs)
}

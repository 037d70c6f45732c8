package main

import (
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// This file reads the PromQL of deploy/grafana/turnstile.json and
// deploy/prometheus/alerts.yml well enough to say which metrics and labels
// it names, and checks those against what a worker's /metrics exports.
// It is not a PromQL parser: it lexes the expression and reads selectors,
// matchers and the label lists of by, without, on, ignoring, group_left
// and group_right; everything else (numbers, durations, operators,
// function names) is skipped. Grafana variables ($job, ${job:regex},
// [[job]], $__rate_interval) are lexed as such, never taken for names.

// promqlRefs is what one expression names.
type promqlRefs struct {
	// Selectors are the instant and range vector selectors, in order.
	Selectors []promqlSelector
	// Clauses are the label lists of grouping and vector-matching
	// clauses, each with the metrics it applies to.
	Clauses []promqlClause
	// Vars are the Grafana variables the expression uses, without "$".
	Vars []string
}

// promqlSelector is one vector selector: foo{a="b"} or {__name__="foo"}.
type promqlSelector struct {
	Metric   string
	Matchers []promqlMatcher
}

// promqlMatcher is one label matcher: Label Op "Value".
type promqlMatcher struct {
	Label, Op, Value string
}

// promqlClause is a label list: by (a, b), on (queue), group_left (x).
type promqlClause struct {
	Keyword string
	Labels  []string
	// Metrics are the metrics whose series the clause groups or matches:
	// for by and without, those inside the aggregation; for the
	// vector-matching keywords, those inside the innermost parentheses
	// around the operator (the whole expression at top level).
	Metrics []string
}

// Labels returns every label name the expression uses, sorted.
func (r promqlRefs) Labels() []string {
	var ls []string
	for _, s := range r.Selectors {
		for _, m := range s.Matchers {
			ls = append(ls, m.Label)
		}
	}
	for _, c := range r.Clauses {
		ls = append(ls, c.Labels...)
	}
	slices.Sort(ls)
	return slices.Compact(ls)
}

// Metrics returns every metric name the expression uses, sorted.
func (r promqlRefs) Metrics() []string {
	var ms []string
	for _, s := range r.Selectors {
		ms = append(ms, s.Metric)
	}
	slices.Sort(ms)
	return slices.Compact(ms)
}

// promqlAggregations take an optional by or without clause.
var promqlAggregations = set("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
	"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio")

// promqlFunctions are PromQL's functions (Prometheus 3), with start and
// end of the @ modifier.
var promqlFunctions = set("abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
	"avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time",
	"day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg", "delta", "deriv", "double_exponential_smoothing",
	"exp", "first_over_time", "floor", "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile",
	"histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info", "irate",
	"label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time",
	"min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time", "quantile_over_time", "rad",
	"rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
	"sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time",
	"timestamp", "ts_of_max_over_time", "ts_of_min_over_time", "ts_of_last_over_time", "vector", "year",
	"start", "end")

// promqlKeywords are never metric names.
var promqlKeywords = set("by", "without", "on", "ignoring", "group_left", "group_right", "bool",
	"and", "or", "unless", "offset", "atan2", "inf", "nan")

// promqlVectorMatching take a label list in parentheses (group_left and
// group_right optionally).
var promqlVectorMatching = set("on", "ignoring", "group_left", "group_right")

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

type promqlTokenKind int

const (
	tokIdent  promqlTokenKind = iota // foo, by, rate
	tokVar                           // $job, ${job}, [[job]]: Text is the name
	tokString                        // "x", 'x', `x`: Text is the unquoted value
	tokNumber                        // 0.99, 5m, 1e3, 0x1f
	tokRange                         // [5m], [$__rate_interval], [1h:5m]: Text is the inside
	tokPunct                         // ( ) { } , and operators
)

type promqlToken struct {
	Kind promqlTokenKind
	Text string
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isIdentChar(c byte) bool { return isIdentStart(c) || '0' <= c && c <= '9' }

// lexPromQL splits an expression into tokens.
func lexPromQL(expr string) ([]promqlToken, error) {
	var toks []promqlToken
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#': // a comment, to the end of the line
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '$':
			name, n, err := lexVar(expr[i:])
			if err != nil {
				return nil, err
			}
			toks, i = append(toks, promqlToken{tokVar, name}), i+n
		case strings.HasPrefix(expr[i:], "[["):
			end := strings.Index(expr[i:], "]]")
			if end < 0 {
				return nil, fmt.Errorf("unclosed [[ at %d", i)
			}
			toks, i = append(toks, promqlToken{tokVar, expr[i+2 : i+end]}), i+end+2
		case c == '[':
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ at %d", i)
			}
			toks, i = append(toks, promqlToken{tokRange, expr[i+1 : i+end]}), i+end+1
		case c == '"' || c == '\'' || c == '`':
			s, n, err := lexString(expr[i:])
			if err != nil {
				return nil, fmt.Errorf("at %d: %w", i, err)
			}
			toks, i = append(toks, promqlToken{tokString, s}), i+n
		case '0' <= c && c <= '9' || c == '.' && i+1 < len(expr) && '0' <= expr[i+1] && expr[i+1] <= '9':
			j := i + 1
			for j < len(expr) && (isIdentChar(expr[j]) || expr[j] == '.' ||
				(expr[j] == '+' || expr[j] == '-') && (expr[j-1] == 'e' || expr[j-1] == 'E')) {
				j++
			}
			toks, i = append(toks, promqlToken{tokNumber, expr[i:j]}), j
		case isIdentStart(c):
			j := i + 1
			for j < len(expr) && isIdentChar(expr[j]) {
				j++
			}
			toks, i = append(toks, promqlToken{tokIdent, expr[i:j]}), j
		default:
			n := 1
			if i+1 < len(expr) && slices.Contains([]string{"==", "!=", ">=", "<=", "=~", "!~"}, expr[i:i+2]) {
				n = 2
			}
			if !strings.Contains("(){},=<>!~+-*/%^@", expr[i:i+1]) {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
			toks, i = append(toks, promqlToken{tokPunct, expr[i : i+n]}), i+n
		}
	}
	return toks, nil
}

// lexVar reads a Grafana variable at the start of s: $name or ${name}
// or ${name:format}. It returns the name and the length read.
func lexVar(s string) (name string, n int, err error) {
	if strings.HasPrefix(s, "${") {
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", 0, fmt.Errorf("unclosed %q", s)
		}
		name, _, _ = strings.Cut(s[2:end], ":")
		return name, end + 1, nil
	}
	j := 1
	for j < len(s) && isIdentChar(s[j]) && s[j] != ':' {
		j++
	}
	if j == 1 {
		return "", 0, fmt.Errorf("a lone $ in %q", s)
	}
	return s[1:j], j, nil
}

// lexString reads a quoted string at the start of s and returns its
// value (escapes left as written: values are only compared) and length.
func lexString(s string) (value string, n int, err error) {
	q := s[0]
	for j := 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return s[1:j], j + 1, nil
		}
	}
	return "", 0, fmt.Errorf("unterminated string %s", s)
}

// grafanaVar finds Grafana variables in a string: $name, ${name},
// ${name:format} and [[name]].
var grafanaVar = regexp.MustCompile(`\$\{(\w+)[^}]*\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]`)

// compactUnsorted drops repeats, keeping the first of each.
func compactUnsorted(ss []string) []string {
	var out []string
	for _, s := range ss {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// parsePromQL returns what expr names.
func parsePromQL(expr string) (promqlRefs, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return promqlRefs{}, err
	}
	// closing[i] is the index of the bracket closing the one at i;
	// opening the reverse; enclosing[i] the innermost ( around i, or -1.
	closing, opening, enclosing := map[int]int{}, map[int]int{}, make([]int, len(toks))
	var stack []int
	for i, t := range toks {
		enclosing[i] = -1
		for k := len(stack) - 1; k >= 0; k-- {
			if toks[stack[k]].Text == "(" {
				enclosing[i] = stack[k]
				break
			}
		}
		if t.Kind != tokPunct {
			continue
		}
		switch t.Text {
		case "(", "{":
			stack = append(stack, i)
		case ")", "}":
			want := map[string]string{")": "(", "}": "{"}[t.Text]
			if len(stack) == 0 || toks[stack[len(stack)-1]].Text != want {
				return promqlRefs{}, fmt.Errorf("unbalanced %q in %q", t.Text, expr)
			}
			open := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			closing[open], opening[i] = i, open
		}
	}
	if len(stack) > 0 {
		return promqlRefs{}, fmt.Errorf("unclosed %q in %q", toks[stack[len(stack)-1]].Text, expr)
	}
	is := func(i int, kind promqlTokenKind, text string) bool {
		return i >= 0 && i < len(toks) && toks[i].Kind == kind && (text == "" || toks[i].Text == text)
	}

	var refs promqlRefs
	for _, t := range toks {
		switch t.Kind {
		case tokVar:
			refs.Vars = append(refs.Vars, t.Text)
		case tokString, tokRange: // label values and durations: $job, ${job:regex}, $__rate_interval
			for _, m := range grafanaVar.FindAllStringSubmatch(t.Text, -1) {
				refs.Vars = append(refs.Vars, m[1]+m[2]+m[3])
			}
		}
	}
	refs.Vars = compactUnsorted(refs.Vars)
	type pending struct {
		clause   promqlClause
		from, to int // the token range whose selectors the clause applies to
	}
	var clauses []pending
	selectorAt := map[int]int{} // token index -> index in refs.Selectors
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.Kind == tokPunct && t.Text == "{": // {__name__="foo"}, with no name before it
			sel, end, err := parseMatchers(toks, i, closing[i])
			if err != nil {
				return promqlRefs{}, err
			}
			for _, m := range sel.Matchers {
				if m.Label == "__name__" && m.Op == "=" {
					sel.Metric = m.Value
				}
			}
			if sel.Metric == "" {
				return promqlRefs{}, fmt.Errorf("a selector without a metric name in %q", expr)
			}
			selectorAt[i] = len(refs.Selectors)
			refs.Selectors = append(refs.Selectors, sel)
			i = end
		case t.Kind != tokIdent:
		case promqlKeywords[t.Text] && (t.Text == "by" || t.Text == "without" || promqlVectorMatching[t.Text]):
			if !is(i+1, tokPunct, "(") {
				if t.Text == "group_left" || t.Text == "group_right" {
					continue
				}
				return promqlRefs{}, fmt.Errorf("%s without a label list in %q", t.Text, expr)
			}
			labels, err := labelList(toks[i+2 : closing[i+1]])
			if err != nil {
				return promqlRefs{}, fmt.Errorf("%s: %w in %q", t.Text, err, expr)
			}
			p := pending{clause: promqlClause{Keyword: t.Text, Labels: labels}}
			switch {
			case t.Text != "by" && t.Text != "without": // vector matching: the enclosing parentheses
				p.from, p.to = enclosing[i], len(toks)
				if p.from >= 0 {
					p.to = closing[p.from]
				}
			case is(i-1, tokIdent, "") && promqlAggregations[toks[i-1].Text]: // sum by (a) (x)
				open := closing[i+1] + 1
				if !is(open, tokPunct, "(") {
					return promqlRefs{}, fmt.Errorf("%s by (...) without its argument in %q", toks[i-1].Text, expr)
				}
				p.from, p.to = open, closing[open]
			case is(i-1, tokPunct, ")") && is(opening[i-1]-1, tokIdent, "") && promqlAggregations[toks[opening[i-1]-1].Text]: // sum (x) by (a)
				p.from, p.to = opening[i-1], i-1
			default:
				return promqlRefs{}, fmt.Errorf("%s outside an aggregation in %q", t.Text, expr)
			}
			clauses = append(clauses, p)
			i = closing[i+1]
		case is(i+1, tokPunct, "("):
			if !promqlAggregations[t.Text] && !promqlFunctions[t.Text] && t.Text != "atan2" {
				return promqlRefs{}, fmt.Errorf("unknown function %q in %q", t.Text, expr)
			}
		case promqlKeywords[t.Text]:
		case promqlAggregations[t.Text] && (is(i+1, tokIdent, "by") || is(i+1, tokIdent, "without")): // sum by (a) (x)
		default: // a metric name, with or without matchers
			sel, end := promqlSelector{Metric: t.Text}, i
			if is(i+1, tokPunct, "{") {
				var err error
				if sel, end, err = parseMatchers(toks, i+1, closing[i+1]); err != nil {
					return promqlRefs{}, err
				}
				sel.Metric = t.Text
			}
			selectorAt[i] = len(refs.Selectors)
			refs.Selectors = append(refs.Selectors, sel)
			i = end
		}
	}
	for _, p := range clauses {
		for i := max(p.from, 0); i <= p.to && i < len(toks); i++ {
			if s, ok := selectorAt[i]; ok {
				p.clause.Metrics = append(p.clause.Metrics, refs.Selectors[s].Metric)
			}
		}
		slices.Sort(p.clause.Metrics)
		p.clause.Metrics = slices.Compact(p.clause.Metrics)
		refs.Clauses = append(refs.Clauses, p.clause)
	}
	return refs, nil
}

// parseMatchers reads the matchers between the braces at open and close.
// It returns the selector (without its metric name) and close.
func parseMatchers(toks []promqlToken, open, closeAt int) (promqlSelector, int, error) {
	var sel promqlSelector
	inner := toks[open+1 : closeAt]
	for len(inner) > 0 {
		if len(inner) < 3 || inner[0].Kind != tokIdent || inner[1].Kind != tokPunct ||
			!slices.Contains([]string{"=", "!=", "=~", "!~"}, inner[1].Text) || inner[2].Kind != tokString {
			return sel, 0, fmt.Errorf("bad matcher near %v", inner)
		}
		sel.Matchers = append(sel.Matchers, promqlMatcher{Label: inner[0].Text, Op: inner[1].Text, Value: inner[2].Text})
		inner = inner[3:]
		if len(inner) > 0 {
			if inner[0].Kind != tokPunct || inner[0].Text != "," {
				return sel, 0, fmt.Errorf("expected a comma near %v", inner)
			}
			inner = inner[1:]
		}
	}
	return sel, closeAt, nil
}

// labelList reads "a, b, c" (a trailing comma allowed); Grafana
// variables in it are skipped, as they cannot be checked.
func labelList(toks []promqlToken) ([]string, error) {
	var labels []string
	for i, t := range toks {
		switch {
		case i%2 == 1 && t.Kind == tokPunct && t.Text == ",":
		case i%2 == 0 && t.Kind == tokIdent:
			labels = append(labels, t.Text)
		case i%2 == 0 && t.Kind == tokVar:
		default:
			return nil, fmt.Errorf("bad label list near %q", t.Text)
		}
	}
	return labels, nil
}

// targetLabels are added by Prometheus to every series it scrapes.
var targetLabels = []string{"job", "instance"}

// exposition is what a /metrics page exports, by the name a query uses
// for each series (a histogram's x_bucket, x_sum and x_count; a
// counter's x_total): its label names, each with the values seen.
type exposition map[string]map[string]map[string]bool

// parseExposition reads a Prometheus text exposition. Every series gets
// the target labels, and up (job, instance), the series Prometheus
// writes for each target, is added.
func parseExposition(r io.Reader) (exposition, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("exposition: %w", err)
	}
	exp := exposition{"up": {"job": {}, "instance": {}}}
	add := func(name string, m *dto.Metric, extra ...string) {
		labels := exp[name]
		if labels == nil {
			labels = map[string]map[string]bool{}
			exp[name] = labels
		}
		for _, l := range append(slices.Clone(targetLabels), extra...) {
			if labels[l] == nil {
				labels[l] = map[string]bool{}
			}
		}
		for _, lp := range m.GetLabel() {
			if labels[lp.GetName()] == nil {
				labels[lp.GetName()] = map[string]bool{}
			}
			labels[lp.GetName()][lp.GetValue()] = true
		}
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				add(name+"_bucket", m, "le")
				add(name+"_sum", m)
				add(name+"_count", m)
			case dto.MetricType_SUMMARY:
				add(name, m, "quantile")
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return exp, nil
}

// checkPromQL returns what is wrong with expr against exp: a metric that
// is not exported, a label a metric does not have, an equality matcher's
// value no series has, a grouping label missing from the metrics it
// groups, and a Grafana variable not in vars (vars nil: none allowed).
func checkPromQL(expr string, exp exposition, vars map[string]bool) []string {
	refs, err := parsePromQL(expr)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, v := range refs.Vars {
		if !vars[v] {
			bad("variable $%s is not defined", v)
		}
	}
	for _, s := range refs.Selectors {
		labels, ok := exp[s.Metric]
		if !ok {
			bad("metric %s is not exported%s", s.Metric, suffixHint(s.Metric, exp))
			continue
		}
		for _, m := range s.Matchers {
			values, ok := labels[m.Label]
			switch {
			case m.Label == "__name__":
			case !ok:
				bad("metric %s has no label %s (it has %s)", s.Metric, m.Label, strings.Join(slices.Sorted(maps.Keys(labels)), ", "))
			case m.Op == "=" && !slices.Contains(targetLabels, m.Label) && !strings.Contains(m.Value, "$") && !values[m.Value]:
				bad("metric %s has no series with %s=%q (it has %s)", s.Metric, m.Label, m.Value, strings.Join(slices.Sorted(maps.Keys(values)), ", "))
			}
		}
	}
	for _, c := range refs.Clauses {
		// by, without and on need the label on every metric they apply
		// to; ignoring and group_x on one at least.
		every := c.Keyword == "by" || c.Keyword == "without" || c.Keyword == "on"
		for _, l := range c.Labels {
			var have, lack []string
			for _, m := range c.Metrics {
				if labels, ok := exp[m]; ok {
					if _, ok := labels[l]; ok {
						have = append(have, m)
					} else {
						lack = append(lack, m)
					}
				}
			}
			if every && len(lack) > 0 || !every && len(have) == 0 && len(lack) > 0 {
				bad("%s (%s): metric %s has no label %s", c.Keyword, l, strings.Join(lack, ", "), l)
			}
		}
	}
	return problems
}

// suffixHint says which exported names a missing one is close to: a
// histogram named without _bucket, a counter without _total.
func suffixHint(name string, exp exposition) string {
	var near []string
	for _, s := range []string{"_bucket", "_sum", "_count", "_total"} {
		if _, ok := exp[name+s]; ok {
			near = append(near, name+s)
		}
	}
	if len(near) == 0 {
		return ""
	}
	return " (did you mean " + strings.Join(near, " or ") + "?)"
}

func TestPromQL_Parse(t *testing.T) {
	t.Parallel()
	sel := func(metric string, matchers ...promqlMatcher) promqlSelector {
		return promqlSelector{Metric: metric, Matchers: matchers}
	}
	for _, tc := range []struct {
		name, expr string
		want       promqlRefs
	}{
		{
			name: "BareMetric", expr: "up",
			want: promqlRefs{Selectors: []promqlSelector{sel("up")}},
		},
		{
			name: "QuantileOfAHistogramWithGrafanaVariables",
			expr: `histogram_quantile(0.99, sum by (le, turnstile_lock_kind) (rate(turnstile_lock_wait_duration_seconds_bucket{job=~"$job", instance=~"${instance:regex}"}[$__rate_interval])))`,
			want: promqlRefs{
				Selectors: []promqlSelector{sel("turnstile_lock_wait_duration_seconds_bucket", promqlMatcher{"job", "=~", "$job"}, promqlMatcher{"instance", "=~", "${instance:regex}"})},
				Clauses:   []promqlClause{{Keyword: "by", Labels: []string{"le", "turnstile_lock_kind"}, Metrics: []string{"turnstile_lock_wait_duration_seconds_bucket"}}},
				Vars:      []string{"job", "instance", "__rate_interval"},
			},
		},
		{
			name: "ByAfterTheArgument", expr: `max(asynq_queue_size) by (queue) > 5`,
			want: promqlRefs{
				Selectors: []promqlSelector{sel("asynq_queue_size")},
				Clauses:   []promqlClause{{Keyword: "by", Labels: []string{"queue"}, Metrics: []string{"asynq_queue_size"}}},
			},
		},
		{
			name: "KeywordsAreNotMetrics",
			expr: "max by (queue) (a{state=\"pending\"}) > bool 0\nand max by (queue) (rate(b[5m] offset 1h)) == 0\nunless on (queue) group_left max without (x) (c @ end())",
			want: promqlRefs{
				Selectors: []promqlSelector{sel("a", promqlMatcher{"state", "=", "pending"}), sel("b"), sel("c")},
				Clauses: []promqlClause{
					{Keyword: "by", Labels: []string{"queue"}, Metrics: []string{"a"}},
					{Keyword: "by", Labels: []string{"queue"}, Metrics: []string{"b"}},
					{Keyword: "on", Labels: []string{"queue"}, Metrics: []string{"a", "b", "c"}},
					{Keyword: "without", Labels: []string{"x"}, Metrics: []string{"c"}},
				},
			},
		},
		{
			name: "MatchingInsideParenthesesAppliesToThem",
			expr: `sum by (a) (x) / (y * ignoring (b) group_left (c) z)`,
			want: promqlRefs{
				Selectors: []promqlSelector{sel("x"), sel("y"), sel("z")},
				Clauses: []promqlClause{
					{Keyword: "by", Labels: []string{"a"}, Metrics: []string{"x"}},
					{Keyword: "ignoring", Labels: []string{"b"}, Metrics: []string{"y", "z"}},
					{Keyword: "group_left", Labels: []string{"c"}, Metrics: []string{"y", "z"}},
				},
			},
		},
		{
			name: "NameMatcherStringsAndComments",
			expr: "{__name__=\"foo_total\", msg=\"a (b) {c} by\"} # rate(not_a_metric[5m])\n+ topk(3, bar{l!~'x|y'}) + count_values(\"v\", baz)[1h:5m]",
			want: promqlRefs{Selectors: []promqlSelector{
				sel("foo_total", promqlMatcher{"__name__", "=", "foo_total"}, promqlMatcher{"msg", "=", "a (b) {c} by"}),
				sel("bar", promqlMatcher{"l", "!~", "x|y"}), sel("baz"),
			}},
		},
		{
			name: "VariablesOutsideStrings",
			expr: `histogram_quantile($quantile, sum by (le, ${groupby}) (rate(x_bucket{a=~"[[a]]|$a"}[$interval]))) > [[min]]`,
			want: promqlRefs{
				Selectors: []promqlSelector{sel("x_bucket", promqlMatcher{"a", "=~", "[[a]]|$a"})},
				Clauses:   []promqlClause{{Keyword: "by", Labels: []string{"le"}, Metrics: []string{"x_bucket"}}},
				Vars:      []string{"quantile", "groupby", "a", "interval", "min"},
			},
		},
		{
			name: "NumbersAndDurations", expr: `0.05 * increase(p_total[15m]) > 1e-3 and 0x1f < 5m`,
			want: promqlRefs{Selectors: []promqlSelector{sel("p_total")}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parsePromQL(tc.expr)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestPromQL_ParseRefuses(t *testing.T) {
	t.Parallel()
	for _, expr := range []string{
		`sum by (a (x)`,                   // unbalanced
		`foo{a="b}`,                       // unterminated string
		`rte(foo[5m])`,                    // a misspelt function
		`sum by a (foo)`,                  // by without parentheses
		`foo{a}`,                          // a matcher without a value
		`foo{a="b" c="d"}`,                // matchers without a comma
		`{a="b"}`,                         // no metric name
		`rate(foo[5m]) by (a)`,            // by outside an aggregation
		`sum by (a, "b") (foo)`,           // a string as a label
		`foo[5m`,                          // unclosed range
		`$`,                               // a lone $
		`foo ; bar`,                       // not PromQL
		`max by (queue) (x) > on(queue y`, // unclosed on
	} {
		_, err := parsePromQL(expr)
		require.Error(t, err, expr)
	}
}

func TestPromQL_Check(t *testing.T) {
	t.Parallel()
	exp, err := parseExposition(strings.NewReader(`# TYPE wait_seconds histogram
wait_seconds_bucket{kind="order",le="0.1"} 1
wait_seconds_bucket{kind="order",le="+Inf"} 1
wait_seconds_sum{kind="order"} 0.05
wait_seconds_count{kind="order"} 1
# TYPE releases_total counter
releases_total{kind="order",outcome="released"} 3
# TYPE queue_size gauge
queue_size{queue="critical"} 0
`))
	require.NoError(t, err)
	vars := set("job", "instance", "__rate_interval")
	for _, tc := range []struct {
		name, expr string
		want       []string // substrings of the problems, one each
	}{
		{"Fine", `histogram_quantile(0.5, sum by (le, kind) (rate(wait_seconds_bucket{job=~"$job", instance=~"$instance"}[$__rate_interval])))`, nil},
		{"UpAndTargetLabels", `up{job="turnstile"} == 0 or sum by (job, instance) (releases_total{outcome="released"})`, nil},
		{"RenamedMetric", `rate(releases_totl[5m])`, []string{"metric releases_totl is not exported"}},
		{"HistogramWithoutSuffix", `rate(wait_seconds[5m])`, []string{"did you mean wait_seconds_bucket or wait_seconds_sum or wait_seconds_count?"}},
		{"UnknownLabel", `releases_total{outcom="released"}`, []string{"metric releases_total has no label outcom"}},
		{"UnknownValue", `releases_total{outcome="not_held"}`, []string{`no series with outcome="not_held"`}},
		{"RegexValuesAreNotChecked", `releases_total{outcome=~"not_held|released"}`, nil},
		{"ByLabelMissing", `sum by (queue) (rate(releases_total[5m]))`, []string{"by (queue): metric releases_total has no label queue"}},
		{"LeOnlyOnBuckets", `sum by (le) (wait_seconds_count)`, []string{"by (le): metric wait_seconds_count has no label le"}},
		{"OnNeedsBothSides", `queue_size * on (kind) releases_total`, []string{"on (kind): metric queue_size has no label kind"}},
		{"UndefinedVariableInARange", `rate(releases_total[$range])`, []string{"variable $range is not defined"}},
		{"UndefinedVariableInAValue", `queue_size{queue=~"${queue:regex}"}`, []string{"variable $queue is not defined"}},
		{"UndefinedVariableAsALabel", `sum by ($group) (queue_size)`, []string{"variable $group is not defined"}},
		{"ParseError", `sum(queue_size`, []string{"unclosed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := checkPromQL(tc.expr, exp, vars)
			require.Len(t, got, len(tc.want), "%q", got)
			for i, w := range tc.want {
				require.Contains(t, got[i], w)
			}
		})
	}
}

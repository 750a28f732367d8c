// Command minio-policy-eval evaluates S3 requests against an IAM policy with MinIO's own policy
// engine (github.com/minio/pkg/v3/policy, what a MinIO server enforces for a user): the
// independent evaluator of tests/operator/test_policies.py.
//
//	minio-policy-eval POLICY.json < queries.jsonl
//
// Each input line is {"action": "s3:GetObject", "bucket": "b", "object": "k", "prefix": "p"}
// ("prefix" only for s3:ListBucket, omitted for a listing without one); each output line is
// "true" or "false". A policy MinIO refuses to parse exits 2 with its error.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/minio/pkg/v3/policy"
)

type query struct {
	Action string  `json:"action"`
	Bucket string  `json:"bucket"`
	Object string  `json:"object"`
	Prefix *string `json:"prefix"`
}

func main() {
	file, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p, err := policy.ParseConfig(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "policy:", err)
		os.Exit(2)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var q query
		if err := json.Unmarshal(in.Bytes(), &q); err != nil {
			fmt.Fprintln(os.Stderr, "query:", err)
			os.Exit(2)
		}
		conditions := map[string][]string{}
		if q.Prefix != nil {
			conditions["prefix"] = []string{*q.Prefix}
		}
		allowed := p.IsAllowed(policy.Args{
			AccountName:     "client",
			Action:          policy.Action(q.Action),
			BucketName:      q.Bucket,
			ObjectName:      q.Object,
			ConditionValues: conditions,
		})
		fmt.Fprintln(out, allowed)
	}
}

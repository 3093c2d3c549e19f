{{- /*
One training run as a batch/v1 Job (plus a headless Service when nodes > 1), with the semantics of
deploy/jobs.py::render_job: shared by benchmark-jobs.yaml (`vitbench train`, one per init) and
pretrain-job.yaml (`vitbench pretrain`). Takes a dict: b (the run's settings, keys as in
.Values.benchmark), name, study, init, labels, args (the `vitbench` arguments), preflight (run `vitbench
data check` in an init container), ctx (the root context).
*/}}
{{- define "vitbench.trainingRun" }}
{{- $b := .b }}
{{- $name := .name }}
{{- $study := .study }}
{{- $init := .init }}
{{- $labels := .labels }}
{{- $args := .args }}
{{- $preflight := .preflight }}
{{- $ctx := .ctx }}
{{- $image := include "vitbench.image" (dict "image" $b.image "ctx" $ctx) }}
{{- $distributed := or (gt (int $b.nodes) 1) (gt (int $b.gpus) 1) }}
{{- $nproc := toString (max (int $b.gpus) 1) }}
{{- $cmd := prepend $args "vitbench" }}
{{- if gt (int $b.nodes) 1 }}
{{- $cmd = concat (list "torchrun" "--nnodes" (toString $b.nodes) "--nproc-per-node" $nproc "--node-rank" "$(NODE_RANK)" "--master-addr" (printf "%s-0.%s" $name $name) "--master-port" (toString $b.masterPort) "-m" "vitbench.cli.main") $args }}
{{- else if $distributed }}
{{- $cmd = concat (list "torchrun" "--standalone" "--nnodes" "1" "--nproc-per-node" $nproc "-m" "vitbench.cli.main") $args }}
{{- end }}
{{- if gt (int $b.nodes) 1 }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- toYaml $labels | nindent 4 }}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    batch.kubernetes.io/job-name: {{ $name }}
  ports:
    - name: rendezvous
      port: {{ $b.masterPort }}
      targetPort: {{ $b.masterPort }}
{{- end }}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ $name }}
  labels:
    {{- toYaml $labels | nindent 4 }}
    {{- if $b.queueName }}
    kueue.x-k8s.io/queue-name: {{ $b.queueName }}
    {{- end }}
spec:
  # Counted per node: a crash on one node takes the other ranks down with it.
  backoffLimit: {{ mul $b.backoffLimit $b.nodes }}
  activeDeadlineSeconds: {{ $b.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: {{ $b.ttlSecondsAfterFinished }}
  podFailurePolicy:
    rules:
      # The trainer's exit code for configuration errors: a retry cannot fix it.
      - action: FailJob
        onExitCodes:
          operator: In
          values: [2]
      {{- if $preflight }}
      # The dataset check found problems (1) or was misused (2): a retry would find the same dataset.
      - action: FailJob
        onExitCodes:
          containerName: preflight
          operator: In
          values: [1, 2]
      {{- end }}
      # Preemption, eviction, node drain: not the run's fault, does not use up backoffLimit.
      - action: Ignore
        onPodConditions:
          - type: DisruptionTarget
            status: "True"
  {{- if gt (int $b.nodes) 1 }}
  completionMode: Indexed
  completions: {{ $b.nodes }}
  parallelism: {{ $b.nodes }}
  {{- end }}
  {{- if $b.queueName }}
  suspend: true
  {{- end }}
  template:
    metadata:
      labels:
        {{- toYaml $labels | nindent 8 }}
        vitbench.io/registry-client: "true"
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: {{ $b.runAsUser }}
        runAsGroup: {{ $b.runAsUser }}
        fsGroup: {{ $b.runAsUser }}
        seccompProfile:
          type: RuntimeDefault
      {{- if gt (int $b.nodes) 1 }}
      subdomain: {{ $name }}
      {{- end }}
      {{- with $b.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if kindIs "slice" $b.tolerations }}
      {{- with $b.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- else if gt (int $b.gpus) 0 }}
      tolerations:
        - key: nvidia.com/gpu
          operator: Exists
          effect: NoSchedule
      {{- end }}
      {{- if $preflight }}
      initContainers:
        # torchrun turns a worker's exit code into 1: check the configuration before it starts.
        - name: preflight
          image: {{ $image }}
          imagePullPolicy: {{ $b.image.pullPolicy }}
          command: ["vitbench", "data", "check", "--data", "/data", "--no-decode"]
          env:
            - name: HOME
              value: /tmp
          resources:
            requests:
              cpu: "1"
              memory: 2Gi
            limits:
              memory: 2Gi
          securityContext:
            {{- include "vitbench.securityContext" $ctx | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /data
              readOnly: true
            - name: tmp
              mountPath: /tmp
      {{- end }}
      containers:
        - name: trainer
          image: {{ $image }}
          imagePullPolicy: {{ $b.image.pullPolicy }}
          command:
            {{- toYaml $cmd | nindent 12 }}
          env:
            - name: MLFLOW_TRACKING_URI
              valueFrom:
                configMapKeyRef:
                  name: {{ $ctx.Values.registry.configMapName }}
                  key: MLFLOW_TRACKING_URI
            - name: MLFLOW_DISABLE_TELEMETRY
              value: "true"
            - name: PYTHONUNBUFFERED
              value: "1"
            - name: HOME
              value: /tmp
            - name: TORCH_HOME
              value: /tmp/cache/torch
            - name: VITBENCH_STUDY
              value: {{ $study }}
            - name: VITBENCH_INIT
              value: {{ $init }}
            {{- if gt (int $b.nodes) 1 }}
            - name: NODE_RANK
              valueFrom:
                fieldRef:
                  fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
            {{- end }}
          {{- if $ctx.Values.registry.credentialsSecret }}
          envFrom:
            - secretRef:
                name: {{ $ctx.Values.registry.credentialsSecret }}
                optional: true
          {{- end }}
          {{- if gt (int $b.nodes) 1 }}
          ports:
            - name: rendezvous
              containerPort: {{ $b.masterPort }}
              protocol: TCP
          {{- end }}
          resources:
            requests:
              cpu: {{ $b.cpu | quote }}
              memory: {{ $b.memory | quote }}
            limits:
              memory: {{ $b.memory | quote }}
              {{- if gt (int $b.gpus) 0 }}
              nvidia.com/gpu: {{ $b.gpus | quote }}
              {{- end }}
          securityContext:
            {{- include "vitbench.securityContext" $ctx | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /data
              readOnly: true
            - name: dshm
              mountPath: /dev/shm
            - name: tmp
              mountPath: /tmp
            {{- if not $b.outputsS3 }}
            - name: outputs
              mountPath: /outputs
            {{- end }}
            {{- if $b.weightsPvc }}
            - name: weights
              mountPath: /weights
              readOnly: true
            {{- end }}
      volumes:
        - name: data
          persistentVolumeClaim:
            claimName: {{ $b.dataPvc }}
            readOnly: true
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $b.shmSize }}
        - name: tmp
          emptyDir: {}
        {{- if not $b.outputsS3 }}
        - name: outputs
          persistentVolumeClaim:
            claimName: {{ $b.outputsPvc }}
        {{- end }}
        {{- if $b.weightsPvc }}
        - name: weights
          persistentVolumeClaim:
            claimName: {{ $b.weightsPvc }}
            readOnly: true
        {{- end }}
{{- end }}

//! The Kubernetes manifests and the systemd unit: valid against their schemas and tools, and
//! consistent with each other and with the configuration they carry.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use vfolder_controller::config::Config;

const K8S: &str = "deploy/kubernetes";
const UNIT: &str = "deploy/systemd/vfolder-controller.service";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo(K8S))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    files
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(repo(K8S).join(name)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs `kubernetes-validate --strict` on `files`; returns (success, output).
fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(files)
        .output()
        .expect("kubernetes-validate must be installed: pip install kubernetes-validate (PyPI)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("no string at {path:?}"))
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// The configuration file the ConfigMap carries, loaded as the controller loads it.
fn configmap_config() -> Config {
    let cm = load("configmap.yaml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, str_at(&cm, &["data", "config.toml"])).unwrap();
    let env = [(
        "VFOLDER_CONTROLLER_DATABASE_URL".to_owned(),
        "postgres://u@db/vfolders".to_owned(),
    )];
    Config::load(Some(&path), env).unwrap()
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let (ok, said) = kubernetes_validate(&manifest_files());
    assert!(ok, "{said}");
    for kind in [
        "deployment",
        "configmap",
        "service",
        "poddisruptionbudget",
        "serviceaccount",
        "secret",
    ] {
        assert!(
            said.contains(&format!("passed for resource {kind}/")),
            "{said}"
        );
    }
}

#[test]
fn the_schema_check_is_able_to_fail() {
    let text = std::fs::read_to_string(repo(K8S).join("deployment.yaml")).unwrap();
    let broken = text.replace("containerPort:", "containerPrt:");
    assert_ne!(broken, text);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deployment.yaml");
    std::fs::write(&path, broken).unwrap();
    let (ok, said) = kubernetes_validate(&[path]);
    assert!(!ok, "{said}");
}

#[test]
fn manifests_are_namespace_agnostic_and_all_in_the_kustomization() {
    let kustomization = load("kustomization.yaml");
    let listed: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for file in manifest_files() {
        let name = file.file_name().unwrap().to_str().unwrap();
        let doc = load(name);
        assert!(
            doc["metadata"]["namespace"].is_null(),
            "{name} names a namespace"
        );
        let expected = !matches!(name, "kustomization.yaml" | "secret.example.yaml");
        assert_eq!(listed.contains(&name), expected, "{name} in kustomization");
    }
}

#[test]
fn deployment_runs_two_probed_replicas_with_the_database_secret() {
    let d = load("deployment.yaml");
    assert_eq!(d["spec"]["replicas"].as_u64(), Some(2));
    let c = container(&d);
    assert_eq!(str_at(c, &["livenessProbe", "httpGet", "path"]), "/healthz");
    assert_eq!(str_at(c, &["readinessProbe", "httpGet", "path"]), "/readyz");
    // The readiness check answers within 2 s; the probe must wait longer than that.
    assert!(c["readinessProbe"]["timeoutSeconds"].as_u64().unwrap() > 2);
    assert!(c["resources"]["requests"].is_mapping());
    assert!(c["resources"]["limits"].is_mapping());
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    let env = c["env"].as_sequence().unwrap();
    let db = env
        .iter()
        .find(|e| e["name"] == "VFOLDER_CONTROLLER_DATABASE_URL")
        .expect("database URL from the environment");
    assert_eq!(
        str_at(db, &["valueFrom", "secretKeyRef", "name"]),
        "vfolder-controller-database"
    );
    let secret = load("secret.example.yaml");
    let key = str_at(db, &["valueFrom", "secretKeyRef", "key"]);
    assert!(
        secret["stringData"][key].is_string(),
        "example secret has {key}"
    );
    let config_path = env
        .iter()
        .find(|e| e["name"] == "VFOLDER_CONTROLLER_CONFIG")
        .map(|e| str_at(e, &["value"]))
        .expect("config file from the ConfigMap");
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let config_mount = mounts.iter().find(|m| m["name"] == "config").unwrap();
    assert_eq!(
        Path::new(config_path).parent().unwrap(),
        Path::new(str_at(config_mount, &["mountPath"]))
    );
}

#[test]
fn the_configmap_loads_and_matches_the_pod() {
    let config = configmap_config();
    assert_eq!(config.http.listen.to_string(), "0.0.0.0:9464");
    assert_eq!(config.database_url, "postgres://u@db/vfolders");
    let d = load("deployment.yaml");
    let c = container(&d);
    assert_eq!(
        c["ports"][0]["containerPort"].as_u64(),
        Some(u64::from(config.http.listen.port()))
    );
    let mount_paths: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| str_at(m, &["mountPath"]))
        .collect();
    for volume in &config.volumes {
        let mount = volume.mount.to_str().unwrap();
        assert!(
            mount_paths.contains(&mount),
            "volume {} at {mount} is not mounted into the pod ({mount_paths:?})",
            volume.host
        );
    }
    // The controller shutdown must fit in the pod's grace period.
    let grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(config.controller.shutdown_grace.as_secs() < grace);
}

#[test]
fn service_monitor_and_disruption_budget_select_the_pods() {
    let d = load("deployment.yaml");
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&d["spec"]["selector"]["matchLabels"], pod_labels);
    let svc = load("service.yaml");
    assert_eq!(&svc["spec"]["selector"], pod_labels);
    let port = &svc["spec"]["ports"][0];
    assert_eq!(
        str_at(port, &["targetPort"]),
        str_at(&container(&d)["ports"][0], &["name"])
    );
    let sm = load("servicemonitor.yaml");
    let svc_labels = svc["metadata"]["labels"].as_mapping().unwrap();
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(svc_labels.get(k), Some(v), "ServiceMonitor selects {k:?}");
    }
    assert_eq!(
        str_at(&sm["spec"]["endpoints"][0], &["port"]),
        str_at(port, &["name"])
    );
    assert_eq!(str_at(&sm["spec"]["endpoints"][0], &["path"]), "/metrics");
    let pdb = load("poddisruptionbudget.yaml");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], pod_labels);
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));
}

/// Runs `systemd-analyze verify` on `unit_text` (installed under the unit's file name in a
/// temporary directory, with `ExecStart` pointing at the binary this test suite built).
fn systemd_verify(unit_text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vfolder-controller.service");
    let text = unit_text.replace(
        "/usr/local/bin/vfolder-controller",
        env!("CARGO_BIN_EXE_vfolder-controller"),
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze must be installed (Debian package `systemd`)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown keys are only warnings: any output counts as a complaint.
    (out.status.success() && said.trim().is_empty(), said)
}

#[test]
fn systemd_accepts_the_unit_without_warnings() {
    let unit = std::fs::read_to_string(repo(UNIT)).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/vfolder-controller run"));
    let (ok, said) = systemd_verify(&unit);
    assert!(ok, "{said}");
    let (ok, said) = systemd_verify(&unit.replace("ProtectHome=", "ProtectHom="));
    assert!(!ok, "a misspelled key must be reported: {said}");
}

#[test]
fn the_unit_is_hardened_but_may_delete_on_the_volumes() {
    let unit = std::fs::read_to_string(repo(UNIT)).unwrap();
    for line in [
        "ProtectSystem=strict",
        "ReadWritePaths=/vfroot",
        "NoNewPrivileges=yes",
        "AmbientCapabilities=CAP_DAC_OVERRIDE CAP_FOWNER",
        "CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_FOWNER",
        "User=vfolder-controller",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
    // systemd's own score, 0 (best) to 10; the unit must stay in its "OK" band.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vfolder-controller.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/vfolder-controller",
            env!("CARGO_BIN_EXE_vfolder-controller"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let score: f64 = said
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for vfolder-controller.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
    assert!(score <= 2.5, "exposure {score}:\n{said}");
}

// Image import with a progress bar: the form is sent with XMLHttpRequest so the upload's
// progress can be shown; the server answers with a redirect to the import's page.
(function () {
  "use strict";
  const form = document.querySelector("[data-upload-form]");
  if (!form) return;
  const progress = form.querySelector("[data-upload-progress]");
  const status = form.querySelector("[data-upload-status]");
  const button = form.querySelector("button[type=submit]");

  form.addEventListener("submit", (event) => {
    const inputs = form.querySelectorAll("[data-upload-input]");
    const data = new FormData();
    data.append("csrfmiddlewaretoken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    let count = 0;
    inputs.forEach((input) => {
      for (const file of input.files) {
        data.append("files", file, file.webkitRelativePath || file.name);
        count += 1;
      }
    });
    if (count === 0) return; // let the server say what is missing
    event.preventDefault();
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      progress.hidden = false;
      progress.value = Math.round((100 * e.loaded) / e.total);
      status.textContent = `${progress.value} %`;
    });
    request.addEventListener("load", () => {
      window.location.assign(request.responseURL || window.location.href);
    });
    request.addEventListener("error", () => {
      status.textContent = form.dataset.errorText || "Échec de l'envoi / Upload failed";
      button.disabled = false;
    });
    button.disabled = true;
    request.send(data);
  });
})();

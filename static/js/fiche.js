// The fiche RCP: organs narrowed to the chosen body system, and the ICD-10 / ICD-O-3 inputs
// turned into a search over the national lists. Progressive enhancement: without this file the
// form still works and the server still refuses an organ of another system or a code off-list.
(function () {
  "use strict";

  // --- Organs of the chosen body system -------------------------------------------------------
  document.querySelectorAll("select[data-organ-filter]").forEach((systemSelect) => {
    const organSelect = document.getElementById(systemSelect.dataset.organFilter);
    if (!organSelect) return;
    let organsBySystem;
    try { organsBySystem = JSON.parse(systemSelect.dataset.organs); } catch (e) { return; }
    const allOptions = Array.from(organSelect.options).map((option) => option.cloneNode(true));

    function narrow() {
      const allowed = organsBySystem[systemSelect.value];
      const current = organSelect.value;
      organSelect.replaceChildren(
        ...allOptions
          .filter((option) => !option.value || !allowed || allowed.includes(option.value))
          .map((option) => option.cloneNode(true))
      );
      // An organ of another system is dropped rather than kept hidden and sent.
      organSelect.value = !allowed || allowed.includes(current) ? current : "";
    }
    systemSelect.addEventListener("change", narrow);
    narrow();
  });

  // --- Search-as-you-type over a code list ----------------------------------------------------
  let comboCount = 0;
  document.querySelectorAll("input[data-code-search]").forEach((input) => {
    comboCount += 1;
    const listId = `code-suggestions-${comboCount}`;
    const chosen = document.createElement("small");
    chosen.className = "code-chosen";
    chosen.lang = "fr";  // the official labels are French, whatever the page's language
    chosen.dataset.testid = "code-chosen";
    chosen.textContent = input.dataset.codeLabel || "";
    const list = document.createElement("ul");
    list.id = listId;
    list.className = "code-suggestions";
    list.setAttribute("role", "listbox");
    list.lang = "fr";
    list.hidden = true;
    // The list hangs under the input: both in one positioned box (the field may be a grid,
    // where an absolute child with no offsets would sit at the field's top).
    const box = document.createElement("span");
    box.className = "code-search";
    input.before(box);
    box.append(input, list);
    box.after(chosen);
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", listId);
    input.setAttribute("aria-expanded", "false");

    let active = -1;
    let pending = null;
    let timer = null;

    function close() {
      list.hidden = true;
      list.replaceChildren();
      active = -1;
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
    }

    function choose(item) {
      input.value = item.dataset.code;
      chosen.textContent = item.dataset.label;
      close();
      input.dispatchEvent(new Event("change", { bubbles: true }));
    }

    function highlight(index) {
      const items = list.querySelectorAll("[role=option]");
      if (!items.length) return;
      active = (index + items.length) % items.length;
      items.forEach((item, i) => item.setAttribute("aria-selected", String(i === active)));
      input.setAttribute("aria-activedescendant", items[active].id);
      items[active].scrollIntoView({ block: "nearest" });
    }

    function show(results) {
      list.replaceChildren();
      active = -1;
      results.forEach((result, i) => {
        const item = document.createElement("li");
        item.id = `${listId}-${i}`;
        item.setAttribute("role", "option");
        item.setAttribute("aria-selected", "false");
        item.dataset.code = result.code;
        item.dataset.label = result.label;
        const code = document.createElement("strong");
        code.textContent = result.code;
        item.append(code, " ", result.label);
        // mousedown, not click: the input keeps its focus and does not close the list first.
        item.addEventListener("mousedown", (event) => { event.preventDefault(); choose(item); });
        list.appendChild(item);
      });
      list.hidden = results.length === 0;
      input.setAttribute("aria-expanded", String(results.length > 0));
    }

    function search() {
      const query = input.value.trim();
      if (pending) pending.abort();
      if (!query) { close(); return; }
      pending = new AbortController();
      const url = `${input.dataset.codeSearch}?q=${encodeURIComponent(query)}`;
      fetch(url, { signal: pending.signal, headers: { Accept: "application/json" } })
        .then((response) => (response.ok ? response.json() : { results: [] }))
        .then((data) => { if (input.value.trim() === query) show(data.results || []); })
        .catch(() => {});
    }

    input.addEventListener("input", () => {
      chosen.textContent = "";
      clearTimeout(timer);
      timer = setTimeout(search, 150);
    });
    input.addEventListener("keydown", (event) => {
      if (list.hidden) {
        if (event.key === "ArrowDown") { search(); event.preventDefault(); }
        return;
      }
      if (event.key === "ArrowDown") { highlight(active + 1); event.preventDefault(); }
      else if (event.key === "ArrowUp") { highlight(active - 1); event.preventDefault(); }
      else if (event.key === "Enter" && active >= 0) {
        choose(list.querySelectorAll("[role=option]")[active]);
        event.preventDefault();
      } else if (event.key === "Escape") { close(); event.preventDefault(); }
    });
    input.addEventListener("blur", close);
  });
})();
